"""The LiteLLM proxy in a process of its own, for the side-by-side latency benchmark.

It forwards to the same OpenAI-compatible upstream as our gateway, under the same model
name, so one request body works against the upstream, our gateway and LiteLLM alike::

    with LiteLLMProxy("http://127.0.0.1:18234/v1") as proxy:
        httpx.post(f"{proxy.base_url}/chat/completions", headers=proxy.headers, json=body)

Or by hand (prints the base URL and the header to send, serves until Ctrl-C)::

    .venv/bin/python -m benchmarks.litellm_proxy --upstream http://127.0.0.1:18234/v1

How it runs (litellm[proxy] from `benchmarks/envs/litellm.txt`, in its own venv):

- no database: the child's environment is built from an allow-list, so no DATABASE_URL,
  DATABASE_HOST..., DIRECT_URL, REDIS_* or LITELLM_* of the caller reaches it; likewise no
  HTTP(S)_PROXY, and none of the variables LiteLLM's CLI reads as options (HOST, PORT,
  DEBUG, DETAILED_DEBUG, NUM_WORKERS);
- one worker: `--num_workers 1` makes uvicorn serve inside the process it was started in
  (no supervisor, no forked worker), so `pid` is the process we started and the one whose
  RSS counts;
- nothing from the internet: see `_ENV` (each setting says why); the one fetch LiteLLM does
  by default at startup is the model cost map from GitHub, at import time, retried three
  times in a background thread;
- its config, HOME, caches and temp files live in a temporary directory removed on exit.
  The one write outside it is Python's bytecode cache in the LiteLLM venv (`.bench/`,
  git-ignored): a deployed LiteLLM starts from compiled modules, and without them every
  start would compile ~all of litellm again (slower, and a larger RSS from the compiler).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

from benchmarks.processes import free_port
from benchmarks.venvs import ensure_venv

# LiteLLM (this version) refuses to start without a master key, and a deployed proxy has
# one; it only ever listens on 127.0.0.1. Clients send `Authorization: Bearer <key>`, the
# same header shape as our gateway's API keys.
MASTER_KEY = "sk-bench-litellm-loopback-only"
STARTUP_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
LOG_TAIL_LINES = 60
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

# Variables passed through from the caller's environment; everything else is dropped.
_PASSTHROUGH = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")

_ENV = {
    # Use the cost map bundled with the package instead of fetching it from GitHub at import.
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    # The other remote JSON/RSS LiteLLM can fetch lazily (Anthropic beta headers, autorouter
    # presets, policy templates, UI blog feed): pin each to its bundled copy as well.
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
    "LITELLM_LOCAL_BLOG_POSTS": "True",
    # Veto the proxy's usage telemetry (already off with no DB and no endpoint; made explicit).
    "LITELLM_TELEMETRY_DISABLED": "True",
    # ERROR for LiteLLM's loggers and uvicorn's log level: no access-log line or INFO log per
    # request, as a production deployment that ships metrics rather than logs would run it.
    "LITELLM_LOG": "ERROR",
    # Any Hugging Face tokenizer lookup stays local (openai/* models count with the tiktoken
    # files bundled in litellm, so none should happen), and no HF telemetry.
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    # Log lines reach the log file at once, so the tail shown on a failed start is complete.
    "PYTHONUNBUFFERED": "1",
}


def proxy_config(upstream_base_url: str, model: str) -> dict[str, object]:
    """The proxy's config.yaml (as a dict; JSON is valid YAML)."""
    return {
        "model_list": [
            {
                # The name clients send: the same as the upstream's, so bodies are identical.
                "model_name": model,
                "litellm_params": {
                    # openai/ = plain OpenAI-compatible chat completions to api_base.
                    "model": f"openai/{model}",
                    "api_base": upstream_base_url,
                    "api_key": "unused",
                },
            }
        ],
        "litellm_settings": {
            # Asked for by the benchmark issue; a no-op attribute in this LiteLLM version,
            # whose telemetry is vetoed by LITELLM_TELEMETRY_DISABLED above.
            "telemetry": False,
            # No per-request debug printing (the default, made explicit).
            "set_verbose": False,
            # Never download a Hugging Face tokenizer for token counting.
            "disable_hf_tokenizer_download": True,
        },
        "general_settings": {
            # Auth as in production: every request is checked against this key.
            "master_key": MASTER_KEY,
        },
    }


class LiteLLMProxy:
    """`litellm --config ... --num_workers 1` on 127.0.0.1, forwarding to an upstream.

    Everything else is LiteLLM's default: uvicorn with uvloop, its default callbacks and
    hooks, cost calculation, the model-info refresh (a GET of the upstream's /v1/models at
    startup and every 300 s). Nothing is tuned for speed beyond quiet logging.
    """

    base_url: str
    headers: dict[str, str]
    startup_seconds: float

    def __init__(self, upstream_base_url: str, model: str = "bench-model", port: int = 0) -> None:
        host = urlsplit(upstream_base_url).hostname
        if host not in LOOPBACK_HOSTS:
            raise ValueError(f"the upstream must be on loopback, got {upstream_base_url!r}")
        self.upstream_base_url = upstream_base_url.rstrip("/")
        self.model = model
        # Beware port 4000: LiteLLM silently moves to a random port when 4000 is taken.
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.headers = {"Authorization": f"Bearer {MASTER_KEY}"}
        self.startup_seconds = 0.0
        self.process: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._log: Path | None = None

    @property
    def pid(self) -> int:
        """The process that serves requests and holds the memory.

        With one worker uvicorn serves in the process LiteLLM's CLI runs in, so this is the
        process we started; should it ever have a larger child (a forked worker), that one.
        """
        if self.process is None:
            raise RuntimeError("the LiteLLM proxy is not running")
        candidates = [self.process.pid, *_children(self.process.pid)]
        return max(candidates, key=_rss_pages)

    def env(self, home: Path) -> dict[str, str]:
        """The child's whole environment: an allow-list of the caller's plus `_ENV`."""
        env = {key: os.environ[key] for key in _PASSTHROUGH if key in os.environ}
        env.update(_ENV)
        for key in ("HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "TMPDIR"):
            env[key] = str(home)  # whatever it caches or writes lands in the temp dir
        return env

    def __enter__(self) -> Self:
        """Start the proxy; return once a real chat completion through it has succeeded."""
        python = ensure_venv("litellm")
        self._tmp = tempfile.TemporaryDirectory(prefix="bench-litellm-")
        home = Path(self._tmp.name)
        config = home / "config.yaml"
        config.write_text(json.dumps(proxy_config(self.upstream_base_url, self.model), indent=2))
        self._log = home / "litellm.log"
        command = [str(python), str(python.parent / "litellm"), "--config", str(config)]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--num_workers", "1"]
        started = time.monotonic()
        try:
            with self._log.open("wb") as log:
                self.process = subprocess.Popen(
                    command,
                    cwd=home,
                    env=self.env(home),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group, stopped as a whole
                )
            self._wait_ready(started + STARTUP_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop the proxy and remove its temp dir."""
        self.stop()

    def stop(self) -> None:
        """SIGTERM to its process group, SIGKILL after `STOP_TIMEOUT_S`; no orphan survives."""
        process = self.process
        if process is not None:
            if process.poll() is None:
                _signal_group(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    _signal_group(process.pid, signal.SIGKILL)
                    process.wait()
            _signal_group(process.pid, signal.SIGKILL)  # any straggler of its group
            self.process = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last `lines` lines of the proxy's combined stdout and stderr."""
        if self._log is None or not self._log.exists():
            return ""
        text = self._log.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def _wait_ready(self, deadline: float) -> None:
        body = json.dumps(
            {"model": self.model, "messages": [{"role": "user", "content": "ready?"}]}
        ).encode()
        headers = {**self.headers, "Content-Type": "application/json"}
        last_error = "no attempt"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the LiteLLM proxy exited with code {self.process.returncode} before it "
                    f"served; its log ends with:\n{self.log_tail()}"
                )
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                connection.request("POST", "/v1/chat/completions", body=body, headers=headers)
                response = connection.getresponse()
                payload = response.read()
                if response.status == 200 and json.loads(payload).get("choices"):
                    return
                last_error = f"HTTP {response.status}: {payload[:300]!r}"
            except (OSError, http.client.HTTPException, ValueError) as error:
                last_error = f"{type(error).__name__}: {error}"
            finally:
                connection.close()
            time.sleep(0.2)
        raise RuntimeError(
            f"the LiteLLM proxy did not complete a chat completion within {STARTUP_TIMEOUT_S:.0f}"
            f" s (last attempt: {last_error}); its log ends with:\n{self.log_tail()}"
        )


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _children(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return children


def _rss_pages(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> None:
    """Start the proxy, print how to call it, serve until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.litellm_proxy",
        description="Run the LiteLLM proxy in front of an OpenAI-compatible loopback upstream.",
    )
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:18234/v1")
    parser.add_argument("--model", default="bench-model", help="the name the upstream knows")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free one")
    args = parser.parse_args(argv)

    # SIGTERM unwinds like Ctrl-C, so the proxy is stopped even while it is still starting.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with LiteLLMProxy(args.upstream, model=args.model, port=args.port) as proxy:
            print(proxy.base_url, flush=True)
            for name, value in proxy.headers.items():
                print(f"header: {name}: {value}", flush=True)
            print(f"pid {proxy.pid}, ready in {proxy.startup_seconds:.1f} s", flush=True)
            while True:
                signal.pause()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
