"""The Dask dashboard a simulation's cluster serves (issue 18: it said "Dask needs bokeh").

A Dask scheduler serves its dashboard only when ``distributed.dashboard.scheduler`` imports,
which needs bokeh at the version distributed requires; otherwise every dashboard page is one
paragraph telling the user to install it. The cluster here is in-process and the page is read
from the loopback address: no network."""

from __future__ import annotations

import urllib.request
from importlib.metadata import version

from distributed import LocalCluster
from distributed.versions import BOKEH_REQUIREMENT


def test_bokeh_is_installed_at_the_version_dask_requires():
    assert BOKEH_REQUIREMENT.specifier.contains(version("bokeh")), BOKEH_REQUIREMENT


def test_a_local_cluster_serves_its_dashboard():
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0"
    ) as cluster:
        url = f"http://127.0.0.1:{cluster.scheduler.http_server.port}/status"
        with urllib.request.urlopen(url, timeout=30) as response:
            page = response.read().decode()
    assert "needs bokeh" not in page
    assert "Bokeh" in page  # the dashboard's own application page
