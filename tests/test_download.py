"""The download stage: demo, local and Kaggle (the network call alone is replaced)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from kaggle.api.kaggle_api_extended import KaggleApi

from boneage import download
from boneage.download import CredentialsError, run

from .conftest import hand_like, write_rsna


def test_demo_is_deterministic(tmp_path):
    a = run("demo", tmp_path / "a.json", None, tmp_path / "a", 12, 5)
    b = run("demo", tmp_path / "b.json", None, tmp_path / "b", 12, 5)
    assert a["labels_sha256"] == b["labels_sha256"]
    assert a["image_listing_sha256"] == b["image_listing_sha256"] and a["n_image_files"] == 12
    c = run("demo", tmp_path / "c.json", None, tmp_path / "c", 12, 6)
    assert c["labels_sha256"] != a["labels_sha256"]


@pytest.fixture
def no_credentials(tmp_path, monkeypatch):
    for var in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kcfg"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def test_kaggle_without_credentials_names_where_to_put_them(tmp_path, no_credentials):
    with pytest.raises(CredentialsError, match=r"KAGGLE_API_TOKEN.*kcfg/kaggle.json.*data_source=local"):
        run("kaggle", tmp_path / "d.json", None, tmp_path / "work", 0, 0)


def test_kaggle_download_with_the_network_call_replaced(tmp_path, no_credentials, monkeypatch):
    (tmp_path / "kcfg").mkdir()
    (tmp_path / "kcfg" / "kaggle.json").write_text('{"username": "u", "key": "k"}')
    calls = []

    def fake_authenticate(self):  # network boundary: the client asks Kaggle's server
        calls.append("authenticate")

    def fake_download(self, dataset, path=None, unzip=False, quiet=True, **kwargs):
        calls.append((dataset, unzip))  # the zip unpacks with the image folder nested twice
        labels = pd.DataFrame({"id": [1, 2], "boneage": [100.0, 50.0], "male": [True, False]})
        write_rsna(tmp_path / "stage", labels, {})
        nested = tmp_path / "stage" / "boneage-training-dataset" / "boneage-training-dataset"
        write_rsna(tmp_path / "inner", labels, {"1.png": hand_like(1), "2.png": hand_like(2)})
        (tmp_path / "inner" / "boneage-training-dataset").rename(nested)
        (tmp_path / "stage").rename(path)

    monkeypatch.setattr(KaggleApi, "authenticate", fake_authenticate)
    monkeypatch.setattr(KaggleApi, "dataset_download_files", fake_download)
    info = run("kaggle", tmp_path / "d.json", None, tmp_path / "work", 0, 0)
    assert calls == ["authenticate", (download.KAGGLE_DATASET, True)]
    assert info["image_dir"].endswith("boneage-training-dataset/boneage-training-dataset")
    assert info["n_image_files"] == 2 and json.loads((tmp_path / "d.json").read_text())["source"] == "kaggle"
    run("kaggle", tmp_path / "d2.json", None, tmp_path / "work", 0, 0)  # already there: no second download
    assert len(calls) == 2


def test_kaggle_without_network_is_one_message_with_the_way_out(tmp_path, no_credentials, monkeypatch):
    import requests

    (tmp_path / "kcfg").mkdir()
    (tmp_path / "kcfg" / "kaggle.json").write_text('{"username": "u", "key": "k"}')

    def no_network(self, *args, **kwargs):  # network boundary: what the client raises offline
        raise requests.exceptions.ConnectionError("Failed to resolve 'www.kaggle.com'")

    monkeypatch.setattr(KaggleApi, "authenticate", lambda self: None)
    monkeypatch.setattr(KaggleApi, "dataset_download_files", no_network)
    with pytest.raises(download.DownloadError, match=r"could not download 'kmader/rsna-bone-age' from Kaggle "
                       r"\(ConnectionError: Failed to resolve 'www.kaggle.com'\)\. Check the network.*"
                       r"use data_source=local data_dir=PATH"):
        run("kaggle", tmp_path / "d.json", None, tmp_path / "work", 0, 0)
