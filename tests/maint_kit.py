"""Real parts for the maintenance tests: releases built here, a firmware-signing PKI, an
HTTP(S) file server on loopback with faults on demand, a release tree.

Nothing leaves the machine: wheels are built offline from this checkout (``pip wheel
--no-deps --no-build-isolation``, setuptools is in the venv), the server listens on
127.0.0.1.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import os
import shutil
import ssl
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO = Path(__file__).resolve().parents[1]
_BUILT: dict[tuple, Path] = {}


# ---- releases ---------------------------------------------------------------------------------
def build_evsite_wheel(out: Path, version: str, patches: dict[str, tuple[str, str]] | None = None) -> Path:
    """A real evsite wheel of this checkout with ``__version__ = version``; ``patches``
    maps a source file to (old text, new text) to make a broken release. Cached per
    process (building takes a couple of seconds)."""
    key = (version, tuple(sorted((patches or {}).items())))
    if key in _BUILT and _BUILT[key].exists():
        return _BUILT[key]
    work = out / f"build-{version}-{len(_BUILT)}"
    src = work / "src"
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for pkg in ("agent", "drivers", "hil"):
        shutil.copytree(REPO / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    init = src / "agent" / "__init__.py"
    init.write_text("\n".join(f'__version__ = "{version}"' if line.startswith("__version__") else line
                              for line in init.read_text().splitlines()) + "\n")
    for rel, (old, new) in (patches or {}).items():
        path = src / rel
        text = path.read_text()
        assert old in text, f"patch target not found in {rel}: {old!r}"
        path.write_text(text.replace(old, new, 1))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--isolated", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "-w", str(work / "dist"), str(src)], check=True, env=env, capture_output=True)
    [wheel] = (work / "dist").glob("evsite-*.whl")
    _BUILT[key] = wheel
    return wheel


def tiny_wheel(out: Path, name: str = "evsite_extra", version: str = "1.0", members: dict[str, bytes] | None = None) -> Path:
    """A minimal wheel written by hand (for archive tests; members may be hostile)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    files = dict(members or {f"{name}/__init__.py": b"VALUE = 1\n"})
    files[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = "".join(f"{n},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},{len(d)}\n"
                     for n, d in files.items())
    files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    with zipfile.ZipFile(path, "w") as zf:
        for n, d in files.items():
            zf.writestr(n, d)
    return path


def tar_of(path: Path, members: dict[str, Path | bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for name, content in members.items():
            data = content.read_bytes() if isinstance(content, Path) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def fake_tree(root: Path, *versions: str, current: str | None = None) -> Path:
    """A release tree with empty venvs (switch/prune tests need no Python in them)."""
    for v in versions:
        (root / "releases" / v / "venv" / "bin").mkdir(parents=True, exist_ok=True)
        (root / "releases" / v / ".evsite-release").write_text(v)
    if current and not (root / "current").is_symlink():
        os.symlink(f"releases/{current}", root / "current")
    return root


# ---- firmware-signing PKI -------------------------------------------------------------------------
def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "evsite test"), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_cert(subject: str, key, issuer: tuple[str, object] | None = None, *, ca: bool, days: float = 30,
              start_days: float = -1, eku=None) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    issuer_name, issuer_key = (issuer[0], issuer[1]) if issuer else (subject, key)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer_name))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now + dt.timedelta(days=start_days)).not_valid_after(now + dt.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def pem(*certs: x509.Certificate) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


@dataclass
class SigningPki:
    """A firmware-signing root, an intermediate and a signer (RSA or EC)."""

    dir: Path
    algorithm: str = "rsa"
    root_key: object = None
    root: x509.Certificate = None
    inter_key: object = None
    inter: x509.Certificate = None
    key: object = None
    cert: x509.Certificate = None
    root_path: Path = field(default=None)

    def __post_init__(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.root_key = new_key("ec")
        self.root = make_cert("fw root", self.root_key, ca=True)
        self.inter_key = new_key("ec")
        self.inter = make_cert("fw intermediate", self.inter_key, ("fw root", self.root_key), ca=True)
        self.key = new_key(self.algorithm)
        self.cert = make_cert("fw signer", self.key, ("fw intermediate", self.inter_key), ca=False,
                              eku=ExtendedKeyUsageOID.CODE_SIGNING)
        self.root_path = self.dir / "fw-root.pem"
        self.root_path.write_text(pem(self.root))

    @property
    def chain_pem(self) -> str:
        return pem(self.cert, self.inter)

    def sign(self, data: bytes, key=None) -> str:
        key = key or self.key
        if isinstance(key, rsa.RSAPrivateKey):
            sig = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        else:
            sig = key.sign(data, ec.ECDSA(hashes.SHA256()))
        return base64.b64encode(sig).decode()


def new_key(algorithm: str = "ec"):
    return rsa.generate_private_key(65537, 2048) if algorithm == "rsa" else ec.generate_private_key(ec.SECP256R1())


# ---- an HTTP(S) file server with faults --------------------------------------------------------------
class FileServer:
    """GET /<name> from ``root`` (Range honoured), PUT/POST /up/<name> stored in
    ``uploads``. Faults: ``cut_after[name] = n`` (send n bytes, then drop the
    connection, once), ``ignore_range``, ``no_length`` (chunked), ``status[name]``."""

    __test__ = False

    def __init__(self, root: Path, tls: ssl.SSLContext | None = None) -> None:
        self.root, self.tls = root, tls
        self.cut_after: dict[str, int] = {}
        self.status: dict[str, int] = {}
        self.ignore_range = False
        self.no_length = False
        self.requests: list[tuple[str, str, str | None]] = []   # method, path, Range header
        self.uploads: dict[str, bytes] = {}
        self.upload_status: int = 200
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def __aenter__(self) -> FileServer:
        app = web.Application(client_max_size=1 << 26)
        app.router.add_get("/{name}", self._get)
        app.router.add_put("/up/{name:.*}", self._put)
        app.router.add_post("/up/{name:.*}", self._post)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.tls)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def url(self, name: str) -> str:
        host = "localhost" if self.tls else "127.0.0.1"
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/{name}"

    def gets(self, name: str) -> list[str | None]:
        return [r for m, p, r in self.requests if m == "GET" and p == f"/{name}"]

    async def _get(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        rng = request.headers.get("Range")
        self.requests.append(("GET", request.path, rng))
        if name in self.status:
            return web.Response(status=self.status[name])
        path = self.root / name
        if not path.is_file():
            return web.Response(status=404)
        data = path.read_bytes()
        start = 0
        resp = web.StreamResponse(status=200)
        if rng and not self.ignore_range:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                return web.Response(status=416, headers={"Content-Range": f"bytes */{len(data)}"})
            resp = web.StreamResponse(status=206, headers={"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"})
        body = data[start:]
        if not self.no_length:
            resp.content_length = len(body)
        await resp.prepare(request)
        cut = self.cut_after.pop(name, None)
        if cut is not None:
            await resp.write(body[:cut])
            request.transport.abort()  # type: ignore[union-attr]
            return resp
        for i in range(0, len(body), 65536):
            await resp.write(body[i:i + 65536])
        await resp.write_eof()
        return resp

    async def _put(self, request: web.Request) -> web.Response:
        self.requests.append(("PUT", request.path, None))
        if self.upload_status != 200:
            return web.Response(status=self.upload_status)
        self.uploads[request.match_info["name"]] = await request.read()
        return web.Response(status=200)

    async def _post(self, request: web.Request) -> web.Response:
        self.requests.append(("POST", request.path, None))
        if self.upload_status != 200:
            return web.Response(status=self.upload_status)
        form = await request.post()
        part = form["file"]
        self.uploads[request.match_info["name"] or part.filename] = part.file.read()  # type: ignore[union-attr]
        return web.Response(status=200)


def server_tls(tmp: Path) -> tuple[ssl.SSLContext, Path]:
    """A TLS context for the file server and the CA file that verifies it."""
    from hil.csms.pki import TestPki

    pki = TestPki(tmp / "http-pki", name="http test CA")
    issued = pki.server()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(issued.cert, issued.key)
    return ctx, pki.ca
