"""A real one-node Ray in the test process, started once per session for the cluster tests."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class LocalRay:
    gcs: str  # host:port of its GCS
    node_id: str
    ip: str  # the node's address
    token: str  # its authentication token (token authentication is on)


@pytest.fixture(scope="session")
def local_ray(mona_cache, fast_epochs):
    """``ray.init`` of a new one-node Ray on this machine (never a cluster already running on this
    machine: ``address="local"``, its own temporary folder): 2 CPUs and 1 GPU declared (so that
    GPU requests are scheduled; no GPU is used), token authentication with a token of its own.
    Its workers see this session's cache and train the embedded source model with the tests'
    epochs (:func:`fast_source`). Shut down, and the environment restored, at the end."""
    import ray

    from mona_tune import ray_compat

    def fast_recipe():  # runs in each worker process (pickled by value)
        from mona_tune.models import source

        source.EMBEDDED_RECIPE["epochs"] = dict(fast_epochs)

    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # socket paths must stay short
    token = secrets.token_hex(32)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("RAY_ADDRESS", raising=False)
        mp.setenv("RAY_AUTH_MODE", "token")
        mp.setenv("RAY_AUTH_TOKEN", token)
        ray_compat.reload_token_auth()
        ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False,
                 logging_level="WARNING", _temp_dir=temp,
                 runtime_env={"worker_process_setup_hook": fast_recipe})
        try:
            ctx = ray.get_runtime_context()
            yield LocalRay(ctx.gcs_address, ctx.get_node_id(), ray.util.get_node_ip_address(),
                           token)
        finally:
            ray.shutdown()
            shutil.rmtree(temp, ignore_errors=True)
    ray_compat.reload_token_auth()
