"""Vertical federated learning (brand labels, partner features, Paillier-encrypted residuals).

Not built yet: see the project's open issue on vertical federated logistic regression.
"""
