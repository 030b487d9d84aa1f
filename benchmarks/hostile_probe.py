"""Probe a `divqat serve` as a hostile client would (issue 16's defects), on loopback only.

    python benchmarks/hostile_probe.py --victim runs/v [--src OTHER_CHECKOUT/src]

Starts `divqat serve VICTIM --port 0` (from this checkout, or from `--src` to probe another
version of the code with the same environment) with one key, sends a handful of bounded
requests and prints one line per defect: what the server did. Each probe waits at most 12 s.
"""

import argparse
import hashlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

KEY = "probe-key-0001-0123456789abcdef0123456789"


def raw(port: int, data: bytes, wait: float = 12.0) -> tuple[bytes, float]:
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        try:
            sock.sendall(data)
            received = b""
            while time.monotonic() - start < wait:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
                if b"\r\n\r\n" in received:
                    break
        except (TimeoutError, ConnectionError):
            pass
    return received, time.monotonic() - start


def status(reply: bytes) -> str:
    return reply.split(b"\r\n", 1)[0].decode(errors="replace") or "(nothing)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--victim", type=Path, required=True)
    parser.add_argument("--src", type=Path, help="probe the divqat under this src/ folder instead")
    args = parser.parse_args()
    env = {**os.environ, **({"PYTHONPATH": str(args.src.resolve())} if args.src else {})}
    with tempfile.TemporaryDirectory(prefix="divqat-probe-") as tmp:
        keys = Path(tmp) / "keys.yaml"
        keys.write_text(f"- {{key: {KEY}, budget: 1000}}\n")
        command = [sys.executable, "-c", "from divqat.cli import entry; entry()", "serve", str(args.victim),
                   "--port", "0", "--db", str(Path(tmp) / "k.db"), "--keys", str(keys)]  # fmt: skip
        proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp)
        log: list[str] = []
        for line in proc.stderr:
            if match := re.search(r"http://127\.0\.0\.1:(\d+)", line):
                port = int(match[1])
                break
        threading.Thread(target=lambda: log.extend(proc.stderr), daemon=True).start()
        auth = {"Authorization": f"Bearer {KEY}"}
        url = f"http://127.0.0.1:{port}"
        try:
            r = httpx.post(f"{url}/v1/predict", content=b"[" * 100_000, headers=auth, timeout=12)
            print(f"100,000 '[' with a valid key: {r.status_code} {r.text[:60]!r}")
            head = (b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nobody-key-0123456789abcdef012345"
                    b"\r\nContent-Length: 31457280\r\n\r\n" + b"[" * 1024)  # fmt: skip
            reply, took = raw(port, head)
            print(f"unknown key, 30 MiB announced, 1 KiB sent: {status(reply)} after {took:.1f} s")
            reply, took = raw(port, b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n")
            print(f"partial headers, then silence: {status(reply)}, connection held {took:.1f} s (probe waits 12 s)")
            r = httpx.get(f"{url}/v1/predict", timeout=12)
            print(f"GET /v1/predict: {r.status_code}, Allow: {r.headers.get('allow')}")
            r = httpx.get(f"{url}/v1/usage", timeout=12)
            print(f"no key: {r.status_code}, WWW-Authenticate: {r.headers.get('www-authenticate')}")
            print(f"HEAD /healthz: {httpx.head(f'{url}/healthz', timeout=12).status_code}")
            r = httpx.post(f"{url}/v1/predict/", headers={**auth, "Host": "evil.example"}, timeout=12)
            print(f"POST /v1/predict/ with Host evil.example: {r.status_code}, Location: {r.headers.get('location')}")
            reply, _ = raw(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (8 << 20) + b"\r\n\r\n")
            print(f"an 8 MiB header: {status(reply)}")
            usage = httpx.get(f"{url}/v1/usage", headers=auth, timeout=12).json()
            legacy = hashlib.sha256(KEY.encode()).hexdigest()[:12]
            print(f"/v1/usage fields: {sorted(usage)}; key id is the SHA-256 prefix: {usage['key'] == legacy}")
            page = httpx.get(f"{url}/docs", timeout=12).text
            print(f"/docs loads from a CDN: {'cdn.jsdelivr' in page or 'unpkg' in page}")
            mode = oct(os.stat(Path(tmp) / "k.db").st_mode & 0o777)
            print(f"database file mode: {mode}")
        finally:
            proc.terminate()
            proc.wait(20)
        tracebacks = sum("Traceback" in line for line in log)
        print(f"server log: {len(log)} lines, {tracebacks} tracebacks")


if __name__ == "__main__":
    main()
