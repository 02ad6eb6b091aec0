"""The program a fetch container runs: download one model into the host's model cache.

Run as ``python3 -c <this file's text> <job JSON>`` in the fetch image (GPUStack's own image has
python3, huggingface_hub and modelscope), so nothing is installed on the host. It does what
GPUStack's worker does (``gpustack/worker/downloaders.py``):

* Hugging Face: the files matching ``huggingface_filename`` (``fnmatch``, sorted; every file when
  it is absent) are fetched with ``huggingface_hub.hf_hub_download(..., local_dir=...)``, several at
  once (``HfDownloader.download_file``: ``thread_map`` with 8 workers); the resolved path is the
  folder, or the first matching file when a filename was given.
* ModelScope: ``modelscope.hub.snapshot_download(model_id, local_dir=..., allow_patterns=...)``.

Before touching the network it checks the marker it left last time: when every file is still there
with its size, it says so and exits (a host that has the model needs no Hub, no token, no mirror).
It prints one progress line at most every ``progress_s`` seconds, one ``gpufleet-fetch resolved:``
line on success, and one ``gpufleet-fetch error:`` line (exit 3) on a failure an operator can fix.

Only the standard library at import time; the hub libraries are imported when needed. Secrets
arrive in the environment (HF_TOKEN), never in argv.
"""
import fnmatch
import json
import os
import sys
import threading
import time

MARKER = ".gpufleet-fetch{}.json"


def say(text):
    print("gpufleet-fetch " + text, flush=True)


def fail(text):
    say("error: " + text)
    sys.exit(3)


def gib(n):
    return "%.2f GiB" % (n / 2**30)


def marker_path(job):
    """One marker per file pattern: two quantisations of one repository share its folder."""
    import hashlib
    pattern = job["filename"]
    tag = "-" + hashlib.sha256(pattern.encode()).hexdigest()[:12] if pattern else ""
    return os.path.join(job["local_dir"], MARKER.format(tag))


def cached(job):
    """The resolved path when the marker says every file is in place with its size, else None."""
    try:
        with open(marker_path(job)) as f:
            marker = json.load(f)
    except (OSError, ValueError):
        return None
    if marker.get("source") != job["source"] or marker.get("repo") != job["repo"] \
            or marker.get("filename") != job["filename"]:
        return None
    for name, size in marker.get("files", {}).items():
        try:
            if os.path.getsize(os.path.join(job["local_dir"], name)) != size:
                return None
        except OSError:
            return None
    return marker.get("resolved")


def write_marker(job, files, resolved):
    marker = dict(source=job["source"], repo=job["repo"], filename=job["filename"], resolved=resolved,
                  files={name: os.path.getsize(os.path.join(job["local_dir"], name)) for name in files})
    tmp = marker_path(job) + ".tmp"
    with open(tmp, "w") as f:
        json.dump(marker, f, indent=1, sort_keys=True)
    os.replace(tmp, marker_path(job))


def progress(job, files, total, stop):
    """Bytes on disk of this fetch's files, finished or partial (huggingface_hub's .incomplete
    files under <local_dir>/.cache/huggingface/download), against the total."""
    last = -1
    partial = os.path.join(job["local_dir"], ".cache", "huggingface", "download")
    while not stop.wait(job["progress_s"]):
        done = 0
        paths = [os.path.join(job["local_dir"], name) for name in files]
        for folder, _, names in os.walk(partial):
            paths += [os.path.join(folder, n) for n in names if n.endswith(".incomplete")]
        for path in paths:
            try:
                done += os.path.getsize(path)
            except OSError:
                pass
        if done != last:
            say("progress: %s of %s (%d files)" % (gib(done), gib(total), len(files)))
            last = done


def fetch_huggingface(job, token):
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo = job["repo"]
    try:
        info = HfApi(token=token).model_info(repo, files_metadata=True)
        siblings = {s.rfilename: (s.size or 0) for s in info.siblings or []}
        pattern = job["filename"]
        files = sorted(n for n in siblings if pattern is None or fnmatch.fnmatch(n, pattern))
        if not files:
            fail("no file in %s matches %r; its files: %s" % (repo, pattern, ", ".join(sorted(siblings)[:12])))
        total = sum(siblings[n] for n in files)
        say("start: %s, %d files, %s, into %s" % (repo, len(files), gib(total), job["local_dir"]))
        stop = threading.Event()
        threading.Thread(target=progress, args=(job, files, total, stop), daemon=True).start()
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(job["max_workers"]) as pool:
            list(pool.map(lambda name: hf_hub_download(repo, name, revision=info.sha, token=token,
                                                       local_dir=job["local_dir"]), files))
        stop.set()
    except GatedRepoError:
        fail("%s is gated: the Hub wants a token of an account that accepted its terms%s" % (
            repo, "; the token given has no access" if token else
            "; set model_fetch.hf_token: secret:NAME in the stack file and pulumi config set --secret NAME hf_…"))
    except RepositoryNotFoundError:
        fail("%s does not exist on %s, or it is private and the token %s" % (
            repo, os.environ.get("HF_ENDPOINT", "https://huggingface.co"), "has no access" if token else "is missing"))
    except (RevisionNotFoundError, EntryNotFoundError) as err:
        fail("%s: %s" % (repo, str(err).splitlines()[0]))
    except HfHubHTTPError as err:
        fail("the Hub answered %s for %s" % (str(err).splitlines()[0], repo))
    except OSError as err:
        fail("%s: %s (is the Hub reachable from this host? set model_fetch.hf_endpoint for a mirror)" % (repo, err))
    return files, (os.path.join(job["local_dir"], files[0]) if job["filename"] else job["local_dir"])


def fetch_modelscope(job, token):
    from modelscope.hub.snapshot_download import snapshot_download

    if token:
        from modelscope.hub.api import HubApi
        HubApi().login(token)
    patterns = [job["filename"]] if job["filename"] else None
    say("start: %s (ModelScope) into %s" % (job["repo"], job["local_dir"]))
    try:
        folder = snapshot_download(job["repo"], local_dir=job["local_dir"], allow_patterns=patterns,
                                   max_workers=job["max_workers"])
    except Exception as err:  # modelscope raises plain exceptions of many kinds
        fail("%s (ModelScope): %s" % (job["repo"], str(err).splitlines()[0] if str(err) else type(err).__name__))
    files = sorted(os.path.relpath(os.path.join(d, n), folder) for d, _, names in os.walk(folder) for n in names
                   if not n.startswith(".") and "/." not in os.path.join(d, n)[len(folder):])
    if patterns:
        files = [f for f in files if fnmatch.fnmatch(f, job["filename"])]
        if not files:
            fail("no file in %s matches %r" % (job["repo"], job["filename"]))
        return files, os.path.join(folder, files[0])
    return files, folder


#: gpustack/utils/hub.py get_max_model_len: the keys a config.json may bound the context with
MAX_LEN_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "model_max_length",
                "max_target_positions", "max_sequence_length", "max_seq_length", "seq_len")


def max_model_len(folder):
    """GPUStack's _derive_max_model_len from the model folder's config.json (its local-config path:
    get_hf_text_config, then get_max_model_len); None when there is no config.json or it fails."""
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError):
        return None
    return derive_max_len(config)


def derive_max_len(config):
    """get_hf_text_config, then get_max_model_len, on a parsed config.json; None when it fails."""
    if not isinstance(config, dict):
        return None
    text = config.get("text_config")
    if isinstance(text, dict) and "num_attention_heads" in text:
        config = text
    try:
        found = [config[k] for k in MAX_LEN_KEYS if config.get(k) is not None]
        derived = min(found) if found else 2048
        rope = config.get("rope_scaling")
        if isinstance(rope, dict):
            kind = rope.get("type", rope.get("rope_type"))
            if kind is not None and kind not in ("su", "longrope", "llama3"):
                if kind == "yarn":
                    derived = rope["original_max_position_embeddings"]
                derived *= rope.get("factor", 1)
        return int(derived)
    except (TypeError, KeyError, ValueError, OverflowError):
        return None


def report_max_len(resolved):
    if os.path.isdir(resolved):
        derived = max_model_len(resolved)
        if derived is not None:
            say("max_model_len: %d" % derived)


def main():
    job = json.loads(sys.argv[1])
    started = time.monotonic()
    resolved = cached(job)
    if resolved:
        say("cached: %s already in %s" % (job["repo"], job["local_dir"]))
        report_max_len(resolved)
        say("resolved: " + resolved)
        return
    os.makedirs(job["local_dir"], exist_ok=True)
    if job["source"] == "huggingface":
        files, resolved = fetch_huggingface(job, os.environ.get("HF_TOKEN") or None)
    else:
        files, resolved = fetch_modelscope(job, os.environ.get("MODELSCOPE_API_TOKEN") or None)
    write_marker(job, files, resolved)
    say("done: %s, %d files in %.0f s" % (job["repo"], len(files), time.monotonic() - started))
    report_max_len(resolved)
    say("resolved: " + resolved)


if __name__ == "__main__":
    main()
