#!/usr/bin/python3
"""Capture what skopeo's image proxy answers for failing image reads, one file
per case, into the directory given (daemon/src/errors/fixtures/): a real
docker-registry with and without htpasswd auth, a port nobody listens on,
an oci: layout without the tag, and a stand-in HTTP server on 127.0.0.1 for
answers a real registry cannot be told to give (500, 403 DENIED, 404
NAME_UNKNOWN, 429 TOOMANYREQUESTS, a reset connection). Ports and temporary
paths are replaced by fixed ones. Needs skopeo and docker-registry; run as
`python3 scripts/capture-registry-errors.py daemon/src/errors/fixtures`.
"""
import base64, crypt, hashlib, io, json, os, socket, subprocess, sys, tarfile, tempfile, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OUT = sys.argv[1]
work = tempfile.mkdtemp(prefix="capture-")

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def blob(layout, data):
    d = hashlib.sha256(data).hexdigest()
    os.makedirs(f"{layout}/blobs/sha256", exist_ok=True)
    open(f"{layout}/blobs/sha256/{d}", "wb").write(data)
    return {"digest": f"sha256:{d}", "size": len(data)}

def plain_layout(layout, tag):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        info = tarfile.TarInfo("usr/bin/hello"); data = b"#!/bin/sh\necho hi\n"; info.size = len(data); info.mode = 0o755
        t.addfile(info, io.BytesIO(data))
    layer = buf.getvalue()
    diff = "sha256:" + hashlib.sha256(layer).hexdigest()
    l = blob(layout, layer); l["mediaType"] = "application/vnd.oci.image.layer.v1.tar"
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": [diff]}}).encode()
    c = blob(layout, cfg); c["mediaType"] = "application/vnd.oci.image.config.v1+json"
    man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": c, "layers": [l]}).encode()
    m = blob(layout, man); m["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
    m["annotations"] = {"org.opencontainers.image.ref.name": tag}
    json.dump({"schemaVersion": 2, "manifests": [m]}, open(f"{layout}/index.json", "w"))
    open(f"{layout}/oci-layout", "w").write('{"imageLayoutVersion": "1.0.0"}')
    return m["digest"]

layout = f"{work}/plain"
digest = plain_layout(layout, "v1")

# registries
def start_registry(auth):
    port = free_port(); d = tempfile.mkdtemp(dir=work)
    conf = f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {d}/storage\nhttp:\n  addr: 127.0.0.1:{port}\n"
    if auth:
        open(f"{d}/htpasswd", "w").write("user:" + crypt.crypt("secret", crypt.mksalt(crypt.METHOD_BLOWFISH)) + "\n")
        conf += f"auth:\n  htpasswd:\n    realm: test\n    path: {d}/htpasswd\n"
    open(f"{d}/config.yml", "w").write(conf)
    p = subprocess.Popen(["docker-registry", "serve", f"{d}/config.yml"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port)).close(); break
        except OSError: time.sleep(0.05)
    return p, port

plain_reg, plain_port = start_registry(False)
auth_reg, auth_port = start_registry(True)

class StandIn(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        if self.path == "/v2/":
            self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers(); return
        mode = self.path.split("/")[2]
        if mode == "e500":
            self.send_response(500); self.send_header("Content-Length", "0"); self.end_headers()
        elif mode == "e403":
            body = json.dumps({"errors": [{"code": "DENIED", "message": "requested access to the resource is denied"}]}).encode()
            self.send_response(403); self.send_header("Content-Type", "application/json"); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
        elif mode == "e429":
            body = json.dumps({"errors": [{"code": "TOOMANYREQUESTS", "message": "pull rate limit exceeded"}]}).encode()
            self.send_response(429); self.send_header("Content-Type", "application/json"); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
        elif mode == "e404name":
            body = json.dumps({"errors": [{"code": "NAME_UNKNOWN", "message": "repository name not known to registry"}]}).encode()
            self.send_response(404); self.send_header("Content-Type", "application/json"); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
        elif mode == "reset":
            import struct
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
    do_HEAD = do_GET

standin = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
standin_port = standin.server_address[1]
threading.Thread(target=standin.serve_forever, daemon=True).start()
dead_port = free_port()

conf = f"{work}/registries.conf"
open(conf, "w").write("".join(f'[[registry]]\nlocation = "127.0.0.1:{p}"\ninsecure = true\n' for p in (plain_port, auth_port, standin_port, dead_port)))
env = dict(os.environ, CONTAINERS_REGISTRIES_CONF=conf)
subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:v1", f"docker://127.0.0.1:{plain_port}/os:v1"], check=True, env=env)
subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds=user:secret", f"oci:{layout}:v1", f"docker://127.0.0.1:{auth_port}/os:v1"], check=True, env=env)

def proxy_error(ref, authfile=None):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    args = ["skopeo", "experimental-image-proxy", "--tls-verify=false", "--sockfd", str(b.fileno())]
    if authfile: args += ["--authfile", authfile]
    p = subprocess.Popen(args, pass_fds=[b.fileno()], env=env, stderr=subprocess.DEVNULL)
    b.close()
    def call(method, args):
        a.send(json.dumps({"method": method, "args": args}).encode())
        return json.loads(a.recv(1 << 20))
    r = call("Initialize", [])
    assert r["success"], r
    r = call("OpenImage", [ref])
    result = None
    if not r["success"]:
        result = ("OpenImage", r["error"])
    else:
        img = r["value"]
        r = call("GetManifest", [img])
        if not r["success"]:
            result = ("GetManifest", r["error"])
    a.close(); p.wait()
    return result

wrong = f"{work}/wrong-auth.json"
json.dump({"auths": {f"127.0.0.1:{auth_port}": {"auth": base64.b64encode(b"user:wrong").decode()}}}, open(wrong, "w"))
cases = {
    "registry-401-no-credentials": (f"docker://127.0.0.1:{auth_port}/os:v1", None),
    "registry-401-wrong-credentials": (f"docker://127.0.0.1:{auth_port}/os:v1", wrong),
    "registry-manifest-unknown": (f"docker://127.0.0.1:{plain_port}/os:nope", None),
    "registry-repository-absent": (f"docker://127.0.0.1:{plain_port}/absent:v1", None),
    "standin-404-name-unknown": (f"docker://127.0.0.1:{standin_port}/e404name/os:v1", None),
    "registry-connection-refused": (f"docker://127.0.0.1:{dead_port}/os:v1", None),
    "standin-500": (f"docker://127.0.0.1:{standin_port}/e500/os:v1", None),
    "standin-403-denied": (f"docker://127.0.0.1:{standin_port}/e403/os:v1", None),
    "standin-429-toomanyrequests": (f"docker://127.0.0.1:{standin_port}/e429/os:v1", None),
    "standin-reset-reading-manifest": (f"docker://127.0.0.1:{standin_port}/reset/os:v1", None),
    "oci-tag-missing": (f"oci:{layout}:nope", None),
    "oci-tag-and-digest": (f"docker://127.0.0.1:{plain_port}/os:v1@{digest}", None),
}
os.makedirs(OUT, exist_ok=True)
for name, (ref, authfile) in cases.items():
    r = proxy_error(ref, authfile)
    print(name, r)
    if r:
        # Ports and temp paths vary per run: store them as a fixed example.
        text = r[1].replace(str(auth_port), "5001").replace(str(plain_port), "5000").replace(str(standin_port), "5002").replace(str(dead_port), "5003").replace(work, "/srv/images")
        open(f"{OUT}/{name}.txt", "w").write(text + "\n")
plain_reg.kill(); auth_reg.kill(); standin.shutdown()
subprocess.run(["rm", "-rf", work])
