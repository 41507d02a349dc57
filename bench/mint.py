#!/usr/bin/env python3
"""Generate test keys and JWTs for the proxy benchmark (run-time only, never committed).

Writes into ./keys/ (relative to this file):
  hs256.secret                 HMAC secret (ASCII, 64 hex chars + newline; the key bytes are the
                               64 ASCII chars themselves, NOT hex-decoded)
  {rs256,es256,eddsa}.key.pem  private keys (PKCS#8 PEM)
  {rs256,es256,eddsa}.pub.pem  public keys (SubjectPublicKeyInfo PEM)
  {rs256,es256,eddsa}.crt.pem  self-signed X.509 certificates wrapping the public keys (the
                               HAProxy 2.6 docs ask for a certificate, but 2.6.12 only loads the
                               .pub.pem public key file; the .crt.pem are for other tools)
  jwks.json                    public JWKS (RS256, ES256, EdDSA; each with kid/alg/use)
  jwks.private.json            JWKS incl. the HS256 "oct" secret key (for verifiers that want a JWKS)
  claims.env                   JWT_ISS / JWT_AUD / key ids, shell-sourceable
  tokens/<alg>.<case>.jwt      alg in hs256 rs256 es256 eddsa (+ ps256 for negative tests);
                               case in valid expired tampered wrongkey badiss badaud
  tokens/none.jwt              alg=none token (must be rejected)
  tokens/garbage.jwt           not a JWT at all (must be rejected)

Keys are generated once and kept (NEW_KEYS=1 regenerates them); tokens are re-issued on every run.
Env: TOKEN_TTL (seconds, default 3600), JWT_ISS, JWT_AUD.
"""
import base64
import datetime as dt
import json
import os
import secrets
import sys
import time
import uuid
from pathlib import Path

import jwt  # PyJWT
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from jwt.algorithms import ECAlgorithm, HMACAlgorithm, OKPAlgorithm, RSAAlgorithm

HERE = Path(__file__).resolve().parent
KEYS = HERE / "keys"
TOK = KEYS / "tokens"

TTL = int(os.environ.get("TOKEN_TTL", "3600"))
ISS = os.environ.get("JWT_ISS", "https://auth.bench.local/")
AUD = os.environ.get("JWT_AUD", "bench-api")


def pem_priv(k):
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption())


def pem_pub(k):
    return k.public_key().public_bytes(serialization.Encoding.PEM,
                                       serialization.PublicFormat.SubjectPublicKeyInfo)


def self_signed(k, cn, hash_alg):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
         .public_key(k.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=365)))
    return b.sign(k, hash_alg).public_bytes(serialization.Encoding.PEM)


def write(path: Path, data, mode=0o644):
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    os.chmod(path, mode)


def b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def main():
    KEYS.mkdir(exist_ok=True)
    TOK.mkdir(exist_ok=True)

    # Keys are kept across runs (so a proxy that already loaded them keeps working);
    # tokens are re-issued on every run. NEW_KEYS=1 (or a missing file) regenerates keys.
    fresh = os.environ.get("NEW_KEYS") == "1" or not all(
        (KEYS / f).exists() for f in ("hs256.secret", "rs256.key.pem", "es256.key.pem", "eddsa.key.pem"))
    if fresh:
        hs_secret = secrets.token_hex(32)  # 64 ASCII chars; the key bytes are these ASCII bytes
        rsa_k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ec_k = ec.generate_private_key(ec.SECP256R1())
        ed_k = ed25519.Ed25519PrivateKey.generate()
    else:
        hs_secret = (KEYS / "hs256.secret").read_text().strip()
        load = lambda n: serialization.load_pem_private_key((KEYS / f"{n}.key.pem").read_bytes(), None)
        rsa_k, ec_k, ed_k = load("rs256"), load("es256"), load("eddsa")
    # second set of keys, for "signed with the wrong key" tokens
    wrong = {
        "HS256": secrets.token_hex(32),
        "RS256": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ES256": ec.generate_private_key(ec.SECP256R1()),
        "EdDSA": ed25519.Ed25519PrivateKey.generate(),
        "PS256": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    }

    if fresh:
        write(KEYS / "hs256.secret", hs_secret + "\n", 0o600)
        for name, k, h in (("rs256", rsa_k, hashes.SHA256()), ("es256", ec_k, hashes.SHA256()),
                           ("eddsa", ed_k, None)):
            write(KEYS / f"{name}.key.pem", pem_priv(k), 0o600)
            write(KEYS / f"{name}.pub.pem", pem_pub(k))
            write(KEYS / f"{name}.crt.pem", self_signed(k, f"bench-jwt-{name}", h))

    def thumb(b: bytes) -> str:
        h = hashes.Hash(hashes.SHA256()); h.update(b); return h.finalize().hex()[:12]
    kids = {"HS256": "bench-hs256-" + thumb(hs_secret.encode()),
            "RS256": "bench-rs256-" + thumb(pem_pub(rsa_k)),
            "ES256": "bench-es256-" + thumb(pem_pub(ec_k)),
            "EdDSA": "bench-eddsa-" + thumb(pem_pub(ed_k))}
    kids["PS256"] = kids["RS256"]  # PS256 tokens use the RSA key (negative test for haproxy)

    def jwk(alg_cls, key, alg):
        d = json.loads(alg_cls.to_jwk(key))
        d.update({"kid": kids[alg], "alg": alg, "use": "sig"})
        return d

    pub_jwks = {"keys": [jwk(RSAAlgorithm, rsa_k.public_key(), "RS256"),
                         jwk(ECAlgorithm, ec_k.public_key(), "ES256"),
                         jwk(OKPAlgorithm, ed_k.public_key(), "EdDSA")]}
    oct_jwk = {"kty": "oct", "k": b64url(hs_secret.encode()), "kid": kids["HS256"], "alg": "HS256", "use": "sig"}
    write(KEYS / "jwks.json", json.dumps(pub_jwks, indent=2) + "\n")
    write(KEYS / "jwks.private.json", json.dumps({"keys": [oct_jwk] + pub_jwks["keys"]}, indent=2) + "\n", 0o600)

    now = int(time.time())

    def claims(**over):
        c = {"iss": ISS, "aud": AUD, "sub": "user-0001", "iat": now, "nbf": now - 5, "exp": now + TTL,
             "jti": uuid.uuid4().hex, "email": "alice@example.test", "scope": "openid profile api:read"}
        c.update(over)
        return c

    signing = {"HS256": hs_secret, "RS256": rsa_k, "ES256": ec_k, "EdDSA": ed_k, "PS256": rsa_k}

    def sign(alg, payload, key=None):
        # A shared secret has no key id (Portcullis pairs a token's kid only with a key that
        # has one, i.e. a JWKS member), so HS256 tokens carry none; the peers ignore kid.
        headers = {"typ": "JWT"} if alg == "HS256" else {"kid": kids[alg], "typ": "JWT"}
        return jwt.encode(payload, key if key is not None else signing[alg], algorithm=alg,
                          headers=headers)

    for alg in ("HS256", "RS256", "ES256", "EdDSA", "PS256"):
        a = alg.lower()
        valid = sign(alg, claims())
        h, p, s = valid.split(".")
        pl = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
        pl["sub"] = "admin"
        tampered = ".".join([h, b64url(json.dumps(pl, separators=(",", ":")).encode()), s])
        cases = {
            "valid": valid,
            "expired": sign(alg, claims(iat=now - 7200, nbf=now - 7200, exp=now - 3600)),
            "tampered": tampered,
            "wrongkey": sign(alg, claims(), key=wrong[alg]),
            "badiss": sign(alg, claims(iss="https://evil.example/")),
            "badaud": sign(alg, claims(aud="someone-else")),
        }
        for case, t in cases.items():
            write(TOK / f"{a}.{case}.jwt", t + "\n")

    none_hdr = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    none_pl = b64url(json.dumps(claims()).encode())
    write(TOK / "none.jwt", f"{none_hdr}.{none_pl}.\n")
    write(TOK / "garbage.jwt", "not-a-jwt\n")

    write(KEYS / "claims.env",
          f"JWT_ISS='{ISS}'\nJWT_AUD='{AUD}'\nTOKEN_EXP={now + TTL}\n"
          + "".join(f"KID_{k.upper()}='{v}'\n" for k, v in kids.items()))
    sizes = {a: len((TOK / f"{a}.valid.jwt").read_text().strip()) for a in ("hs256", "rs256", "es256", "eddsa")}
    print(f"[mint] {'new' if fresh else 'kept'} keys, fresh tokens in keys/ (exp in {TTL}s); token bytes: {sizes}", file=sys.stderr)


if __name__ == "__main__":
    main()
