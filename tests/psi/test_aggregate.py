from collections import Counter
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pec.paillier import KeyPair
from psi.aggregate import AggregateBrand, AggregateConfig, AggregatePartner
from psi.errors import HandshakeMismatch, UnexpectedMessage
from psi.wire import AggCiphers, AggSum, Points, from_wire
from tests.psi.helpers import exchange

pytestmark = pytest.mark.unit

KEYS = KeyPair.generate(512)  # small key: speed only; the engine's own tests cover 2048
LABELS = ("byd", "tesla", "toyota", "none")
CONFIG = AggregateConfig(run_id="agg-1", rules="pec-norm/1;raw:as-is", kind="raw", chunk_size=7)


def parties(brand_ids, partner_rows, **kw):
    brand = AggregateBrand(CONFIG, [i.encode() for i in brand_ids])
    partner = AggregatePartner(
        CONFIG,
        [k.encode() for k, _ in partner_rows],
        [LABELS.index(g) for _, g in partner_rows],
        LABELS,
        keypair=KEYS,
        **kw,
    )
    return brand, partner


def plaintext(brand_ids, partner_rows):
    mine = set(brand_ids)
    return Counter(g for k, g in partner_rows if k in mine)


@settings(max_examples=15, deadline=None)
@given(
    st.sets(st.integers(0, 60), max_size=25),
    st.dictionaries(st.integers(0, 60), st.sampled_from(LABELS), max_size=30),
)
def test_cells_equal_the_plaintext_group_counts(brand_ids, partner_map) -> None:
    brand_ids = [f"id{i}" for i in sorted(brand_ids)]
    partner_rows = [(f"id{k}", g) for k, g in sorted(partner_map.items())]
    brand, partner = parties(brand_ids, partner_rows, min_cell=1)
    exchange(brand, partner)
    expected = plaintext(brand_ids, partner_rows)
    released = brand.result().cells
    assert {k: v for k, v in released.items() if v is not None} == {
        k: v for k, v in expected.items() if v >= 1
    }
    assert brand.result().intersection == sum(expected.values())
    assert partner.result().cells == {label: expected.get(label, 0) for label in LABELS}


def test_small_cells_are_suppressed_and_noise_is_added() -> None:
    brand_ids = [f"id{i}" for i in range(40)]
    partner_rows = [(f"id{i}", "byd" if i < 30 else "tesla") for i in range(60)]
    brand, partner = parties(brand_ids, partner_rows, min_cell=15)
    exchange(brand, partner)
    assert brand.result().cells == {"byd": 30, "tesla": None, "toyota": None, "none": None}
    assert partner.result().cells["tesla"] == 10  # the partner sees it; the brand does not
    noisy_brand, noisy_partner = parties(
        brand_ids, partner_rows, min_cell=15, epsilon=0.5, uniform=lambda: 0.9
    )
    exchange(noisy_brand, noisy_partner)
    # u = 0.9 -> Laplace draw = log(1 - 2*0.4)... = -ln(0.2)/0.5 = +3.2
    assert noisy_brand.result().cells["byd"] == 33
    assert noisy_brand.result().epsilon == 0.5


def test_transcript_carries_no_identifier_and_no_per_record_label() -> None:
    brand_ids = ["13812345678", "secret@example.com"]
    partner_rows = [("13812345678", "tesla"), ("other@example.com", "byd")]
    brand, partner = parties(brand_ids, partner_rows, min_cell=1)
    transcript = exchange(brand, partner)
    blob = b"".join(transcript)
    for needle in (b"13812345678", b"secret@example.com", b"other@example.com"):
        assert needle not in blob
    # the labels appear in the partner's hello (the group domain) and the release, never per record
    carriers = {type(from_wire(f)).__name__ for f in transcript if b"tesla" in f}
    assert carriers == {"AggHello", "AggRelease"}


def test_the_sum_is_rerandomized() -> None:
    brand_ids = [f"id{i}" for i in range(5)]
    partner_rows = [(f"id{i}", "byd") for i in range(5)]
    brand, partner = parties(brand_ids, partner_rows, min_cell=1)
    transcript = exchange(brand, partner)
    messages = [from_wire(f) for f in transcript]
    sent_sum = next(m for m in messages if isinstance(m, AggSum)).ciphertext
    product = 1
    for m in messages:
        if isinstance(m, AggCiphers):
            for i in range(m.count):
                start = i * (32 + m.ct_width) + 32
                product = product * int.from_bytes(m.body[start : start + m.ct_width], "big")
    assert sent_sum != product % KEYS.public_key.nsquare


def test_refusals() -> None:
    brand, partner = parties(["a"], [("a", "byd")])
    hello_b, hello_p = next(brand.start()), next(partner.start())
    with pytest.raises(HandshakeMismatch):
        list(partner.receive(replace(hello_b, kind="phone")))
    brand, partner = parties(["a"], [("a", "byd")])
    hello_b, hello_p = next(brand.start()), next(partner.start())
    list(partner.receive(hello_b))
    masked = list(brand.receive(hello_p))
    replies = list(partner.receive(masked[0]))
    records = [m for m in replies if isinstance(m, AggCiphers)]
    with pytest.raises(UnexpectedMessage, match="before all doubles"):
        list(brand.receive(replace(records[0], seq=1)))
    with pytest.raises(ValueError):
        AggregatePartner(CONFIG, [b"a"], [9], LABELS, keypair=KEYS)


def test_a_forged_sum_is_refused() -> None:
    brand, partner = parties(["a", "b"], [("a", "byd"), ("b", "tesla")], min_cell=1)
    hello_b, hello_p = next(brand.start()), next(partner.start())
    list(partner.receive(hello_b))
    to_partner = list(brand.receive(hello_p))
    to_brand = [m for out in to_partner for m in partner.receive(out)]
    back = [m for m in to_brand for m in brand.receive(m)]
    assert isinstance(back[-1], AggSum)
    forged = replace(back[-1], ciphertext=pow(7, 3, KEYS.public_key.nsquare) * 12345)
    with pytest.raises(UnexpectedMessage):
        list(partner.receive(forged))
    assert isinstance(to_partner[0], Points)
