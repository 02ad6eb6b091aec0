"""ModelFetch: the model is on its host before any replica there starts.

A Pulumi dynamic resource per (host, model): its create connects over SSH (paramiko, the
inventory's known_hosts and key) and runs the fetch container (``stack.fetches``), relaying the
fetch's progress lines; a Python dynamic provider's printed output reaches the `pulumi up` display
(pulumi/pulumi#18253). It fails the up with the fetch's own reason (gated, not found, no space,
timeout). Its output ``model_path`` is the path the engine gets; replicas depend on it, so the
health wait starts only once the model is there, and the fetch has its own timeout. Inputs are the
fetch itself; an unchanged fetch is not run again, a changed one (another file, image or mirror)
runs as an update. Delete leaves the files: a model cache is shared by stacks and replicas.
"""
from __future__ import annotations

from dataclasses import asdict

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ResourceProvider, UpdateResult

from inventory.ssh import Endpoint
from stack.fetches import FetchSpec


def _fetch(props: dict) -> dict:
    # imported here: the dynamic provider runs in its own process with the project importable
    from inventory.ssh import Endpoint, connect, run, stream
    from stack.fetch_run import run_fetch
    from stack.fetches import FetchSpec

    endpoint = Endpoint.from_props(props["endpoint"])
    spec = FetchSpec.from_props(props["spec"])
    client = connect(endpoint)
    try:
        fetched = run_fetch(lambda argv, stdin, on_line, timeout: stream(client, argv, stdin, on_line, timeout),
                         lambda argv: run(client, argv), spec, props.get("secrets") or {},
                         report=lambda line: print(line, flush=True), where=f" on {endpoint.name}")
    finally:
        client.close()
    return {"model_path": fetched.model_path, "max_model_len": fetched.max_model_len}


class _ModelFetchProvider(ResourceProvider):
    def diff(self, _id, olds, news):
        """Fetch again only when what is fetched, or from where, changed: a rotated token is no reason."""
        changed = [k for k in ("spec", "endpoint") if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

    def create(self, props):
        return CreateResult(id_=f"{props['spec']['host']}/{props['spec']['local_dir']}", outs={**props, **_fetch(props)})

    def update(self, _id, _olds, news):
        return UpdateResult(outs={**news, **_fetch(news)})


class ModelFetch(pulumi.dynamic.Resource):
    """Created once the model is in the host's cache; ``model_path`` is where, ``max_model_len``
    what its config.json allows (GPUStack's derivation; None without a config.json)."""

    model_path: pulumi.Output[str]
    max_model_len: pulumi.Output[int | None]

    def __init__(self, name: str, endpoint: Endpoint, spec: FetchSpec, secrets: dict[str, pulumi.Output[str]],
                 opts: pulumi.ResourceOptions | None = None):
        wanted = {key: secrets[key] for _, key in spec.secret_env}
        super().__init__(_ModelFetchProvider(), name, {
            "endpoint": asdict(endpoint), "spec": asdict(spec),
            "secrets": pulumi.Output.secret(wanted) if wanted else {}, "model_path": None,
            "max_model_len": None}, opts)
