"""A local MLflow store given by a relative path names the same store in every process of a run: the command
makes it absolute in its own directory (Ray Train workers and Tune trials run in directories of their own)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.runtime.tracking import ENV_URI, resolve_tracking_uri


@pytest.mark.parametrize("given, expected", [
    ("sqlite:///mlflow.db", "sqlite:///{d}/mlflow.db"),
    ("sqlite:///sub/x.db?timeout=5", "sqlite:///{d}/sub/x.db?timeout=5"),
    ("sqlite:////abs/x.db", "sqlite:////abs/x.db"),
    ("sqlite://", "sqlite://"),
    ("mlruns", "{d}/mlruns"),
    ("./mlruns", "{d}/mlruns"),
    ("/abs/mlruns", "/abs/mlruns"),
    ("~/mlruns", "{home}/mlruns"),
    ("file:///abs/mlruns", "file:///abs/mlruns"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ("databricks", "databricks"),
])
def test_relative_local_stores_become_absolute(tmp_path, monkeypatch, given, expected):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ENV_URI, raising=False)
    expected = expected.format(d=tmp_path, home=Path.home())
    assert resolve_tracking_uri(given) == expected
    monkeypatch.setenv(ENV_URI, given)  # the environment's value too
    assert resolve_tracking_uri("") == expected


def test_no_uri_is_a_store_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_URI, raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri("") == f"sqlite:///{tmp_path}/mlflow.db"
    assert resolve_tracking_uri("", tmp_path / "w") == f"sqlite:///{tmp_path}/w/mlflow.db"
