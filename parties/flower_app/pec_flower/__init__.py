"""PEC's Flower app: a ServerApp for the brand and a relay ClientApp for partners."""
