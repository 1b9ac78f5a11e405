"""`aimbench ls` tables: every shipped family listed with its weights source and licence."""

from __future__ import annotations

from aimbench.cards.registry import Registry
from aimbench.report.listing import backbone_listing, short_weights


def test_short_weights_keeps_host_and_file_of_urls() -> None:
    assert short_weights("timm") == "timm"
    assert short_weights("hf:apple/AIM/aim_600m_2bimgs_attnprobe_backbone.pth") == "hf:apple/AIM/aim_600m_2bimgs_attnprobe_backbone.pth"
    url = "https://github.com/addf400/files/releases/download/v1.0/beit_large_patch16_224_pt22k.pth?sig=x"
    assert short_weights(url) == "github.com/…/beit_large_patch16_224_pt22k.pth"
    assert short_weights("http://127.0.0.1:8000/w.pth") == "127.0.0.1:8000/w.pth"


def test_backbone_listing_covers_every_family_with_weights_and_licence() -> None:
    table = backbone_listing(Registry.load())
    columns = table.columns
    rows = [dict(zip(columns, row)) for row in table.rows]
    assert {row["family"] for row in rows} >= {"aim", "aimv2", "beit", "clip", "dino", "dinov2", "mae"}
    assert all(row["weights"] and row["licence"] for row in rows)
    by_name = {row["name"]: row for row in rows}
    assert by_name["mae-vith14"]["licence"] == "CC-BY-NC-4.0" and by_name["mae-vith14"]["weights"] == "timm"
    assert by_name["beit-vitl16-pt22k"]["weights"] == "github.com/…/beit_large_patch16_224_pt22k.pth"
    assert by_name["aim-7b"]["weights"].startswith("hf:apple/AIM/")
    assert table.title == f"{len(rows)} backbone variants"
