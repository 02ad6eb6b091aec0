"""Preview benchmark: the gpufleet program under Pulumi mocks vs a bare program with no gpufleet logic.

    .venv/bin/python bench/preview.py

For 100 and 1,000 replicas it writes a synthetic project (inventory, stack, the shipped
backends) to a temporary folder, then in separate processes measures wall time and peak RSS
of (a) gpufleet's program and (b) a bare program that registers the same providers, images
and containers with inputs of the same shape: the floor the Pulumi SDK sets.  The two run
alternately ``--repeat`` times and the medians are compared (a single run varies by 10%
here).  Prints JSON.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def write_project(folder: Path, replicas: int) -> None:
    """replicas/4 hosts of 8 GPUs; deployments of 4 replicas, half whole-GPU vLLM, half shared TEI."""
    shutil.copytree(ROOT / "backends", folder / "backends", ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "Pulumi.yaml").write_text((ROOT / "Pulumi.yaml").read_text())
    (folder / "inventory").mkdir()
    (folder / "stack").mkdir()
    hosts = max(1, replicas // 4)
    inv = ["defaults:", "  ssh: {user: gpufleet, identity_file: ~/.ssh/gpufleet_ed25519, known_hosts: known_hosts}",
           "hosts:"]
    for i in range(hosts):
        inv += [f"  - name: gpu-{i:04d}", f"    address: 127.4.{i // 250}.{i % 250 + 1}",
                "    accelerators:", "      - {vendor: nvidia, model: H100, vram: 80GiB, count: 8}"]
    (folder / "inventory" / "bench.yaml").write_text("\n".join(inv) + "\n")
    deps = ["inventory: ../inventory/bench.yaml", "deployments:"]
    for d in range(replicas // 4):
        if d % 2:
            deps += [f"  llm-{d:04d}:", "    backend: vLLM", "    model: {huggingface: Qwen/Qwen3-8B}",
                     "    replicas: 4", "    resources: {gpus: 1, vram: whole}",
                     "    env: {VLLM_LOGGING_LEVEL: INFO}", "    backend_parameters: [--max-model-len=8192]"]
        else:
            deps += [f"  emb-{d:04d}:", "    backend: Text-Embeddings-Inference", "    version: CUDA-Hopper-1.9",
                     "    model: {huggingface: BAAI/bge-m3}", "    replicas: 4",
                     "    resources: {gpus: 1, vram: 8GiB, share: advisory}"]
    (folder / "stack" / "bench.yaml").write_text("\n".join(deps) + "\n")


class _Mocks:
    def __init__(self):
        import pulumi

        class M(pulumi.runtime.Mocks):
            count = 0

            def new_resource(self, args):
                M.count += 1
                out = dict(args.inputs)
                if args.typ == "docker:index/remoteImage:RemoteImage":
                    out["imageId"] = "sha256:" + args.name
                return f"{args.name}-id", out

            def call(self, args):
                return {}, None

        self.mocks = M()


def run_gpufleet(folder: Path) -> int:
    import pulumi

    from components.program import run

    m = _Mocks().mocks
    pulumi.runtime.set_mocks(m, project="gpufleet", stack="bench", preview=True)
    pulumi.runtime.set_all_config({"gpufleet:allowUnplaced": "false"}, [])

    @pulumi.runtime.test
    def program():
        return pulumi.Output.from_input(run(folder))

    program()
    return type(m).count


def layout(folder: Path) -> dict:
    """What gpufleet will register for this project (computed outside any timing)."""
    from stack.plan import build_plan
    from stack.project import load_project

    from stack.lock import render_lock

    plan = build_plan(load_project("bench", folder))
    # the program refuses a preview without the lock the plan writes (`gpufleet lock`)
    (folder / "stack" / "bench.lock.yaml").write_text(render_lock("bench", plan.placement))
    fetches = sorted({(c.host, c.fetch.key) for c in plan.containers if c.fetch is not None})
    return {"images": plan.images_by_host(), "fetches": [list(f) for f in fetches],
            "containers": [[c.deployment, c.replica, c.host, c.image, c.port] for c in plan.containers]}


def run_bare(folder: Path) -> int:
    """The same providers, images, components and containers, written by hand from a precomputed layout:
    no YAML, no placement, no rendering.  Inputs have the same shape as gpufleet's."""
    import pulumi
    import pulumi_docker as docker

    spec = json.loads((folder / "layout.json").read_text())
    m = _Mocks().mocks
    pulumi.runtime.set_mocks(m, project="gpufleet", stack="bench", preview=True)
    pulumi.runtime.set_all_config({}, [])

    @pulumi.runtime.test
    def program():
        hosts, components, containers = {}, {}, []
        for h, images in spec["images"].items():
            comp = pulumi.ComponentResource("bare:index:Host", h, {}, None)
            provider = docker.Provider(f"{h}-docker", host=f"ssh://gpufleet@{h}:22",
                                       ssh_opts=["-o", "StrictHostKeyChecking=yes"] * 8,
                                       opts=pulumi.ResourceOptions(parent=comp))
            hosts[h] = (provider, {i: docker.RemoteImage(f"{h}-{n}", name=i, keep_locally=True,
                                                         opts=pulumi.ResourceOptions(parent=comp, provider=provider))
                                   for n, i in enumerate(images)})
        for i, (h, key) in enumerate(spec["fetches"]):  # one model fetch per (host, model), as gpufleet
            pulumi.CustomResource("bare:index:Fetch", f"{h}-fetch-{i}", {"key": key, "model_path": None})
        for dep, replica, h, image, port in spec["containers"]:
            comp = components.get(dep)
            if comp is None:
                comp = components[dep] = pulumi.ComponentResource("bare:index:Deployment", dep, {}, None)
            provider, images = hosts[h]
            containers.append(docker.Container(
                f"{dep}-{replica}", name=f"gpufleet-{dep}-{replica}", image=images[image].image_id,
                entrypoints=["vllm", "serve"],
                command=["Qwen/Qwen3-8B", "--host", "127.0.0.1", "--port", str(port), "--served-model-name", dep,
                         "--tensor-parallel-size", "1", "--trust-remote-code", "--max-model-len=8192"],
                envs=["CUDA_VISIBLE_DEVICES=0", "HF_HOME=/var/lib/gpufleet/models/huggingface"],
                network_mode="host", restart="unless-stopped", shm_size=16384,
                labels=[docker.ContainerLabelArgs(label=f"gpufleet.l{i}", value="v") for i in range(8)],
                mounts=[docker.ContainerMountArgs(target="/m", source="/m", type="bind", read_only=False)],
                devices=[],
                device_requests=[docker.ContainerDeviceRequestArgs(driver="nvidia", device_ids=["0"],
                                                                   capabilities=["gpu"])],
                healthcheck=docker.ContainerHealthcheckArgs(tests=["CMD-SHELL", "curl -f http://x/ || exit 1"],
                                                            interval="15s", timeout="10s", start_period="600s",
                                                            retries=3),
                wait=True, wait_timeout=900,
                opts=pulumi.ResourceOptions(parent=comp, provider=provider, depends_on=[images[image]],
                                            delete_before_replace=True,
                                            replace_on_changes=["healthcheck", "deviceRequests", "devices"],
                                            custom_timeouts=pulumi.CustomTimeouts(create="1200s", update="1200s",
                                                                                  delete="10m"))))
        for c, (dep, replica, *_rest) in zip(containers, spec["containers"]):  # health gates, as gpufleet
            pulumi.CustomResource("bare:index:HealthGate", f"{dep}-{replica}-healthy", {"container_id": c.id},
                                  opts=pulumi.ResourceOptions(depends_on=[c]))
        pulumi.StackReference("bench-applied", "organization/gpufleet/bench")  # the applied-state comparison
        return pulumi.Output.all(*[c.id for c in containers])

    program()
    return type(m).count


def one(kind: str, replicas: int, folder: str) -> dict:
    t0 = time.perf_counter()
    count = run_gpufleet(Path(folder)) if kind == "gpufleet" else run_bare(Path(folder))
    seconds = time.perf_counter() - t0
    return {"program": kind, "replicas": replicas, "resources": count, "seconds": round(seconds, 3),
            "ms_per_container": round(1000 * seconds / replicas, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--one", nargs=3, metavar=("KIND", "REPLICAS", "FOLDER"), help=argparse.SUPPRESS)
    ap.add_argument("--sizes", default="100,1000")
    ap.add_argument("--repeat", type=int, default=3, help="alternating runs of each program; medians reported")
    args = ap.parse_args()
    if args.one:
        kind, replicas, folder = args.one
        print(json.dumps(one(kind, int(replicas), folder)))
        return
    rows = []
    for replicas in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            write_project(Path(tmp), replicas)
            (Path(tmp) / "layout.json").write_text(json.dumps(layout(Path(tmp))))
            runs: dict[str, list[dict]] = {"bare": [], "gpufleet": []}
            for _ in range(args.repeat):  # alternate, so drift in machine speed hits both alike
                for kind in ("bare", "gpufleet"):
                    out = subprocess.run([sys.executable, __file__, "--one", kind, str(replicas), tmp],
                                         capture_output=True, text=True, check=True, cwd=tmp)
                    runs[kind].append(json.loads(out.stdout.strip().splitlines()[-1]))
            pair = {kind: {**sorted(rs, key=lambda r: r["seconds"])[len(rs) // 2],
                           "all_seconds": [r["seconds"] for r in rs]} for kind, rs in runs.items()}
            assert pair["gpufleet"]["resources"] == pair["bare"]["resources"], pair
            pair["ratio"] = round(pair["gpufleet"]["seconds"] / pair["bare"]["seconds"], 3)
            rows.append(pair)
    print(json.dumps({"python": sys.version.split()[0], "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
