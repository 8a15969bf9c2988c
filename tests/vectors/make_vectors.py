#!/usr/bin/env python3
"""Write tests/vectors/password_hashes.json: password hashes made by the real Python
libraries that legacy Flask apps (WhaleFall and friends) store in their user tables.

The gateway's verifier is tested against these instead of against hashes produced by
its own Rust crates, so a format quirk in either side shows up as a failing vector.

Usage:  pip install -r tests/vectors/requirements.txt
        python tests/vectors/make_vectors.py
Salts are random, so every run rewrites the file with different (equally valid) hashes.
"""

import json
import pathlib
from importlib.metadata import version

import argon2
import bcrypt
from werkzeug.security import check_password_hash, generate_password_hash

OUT = pathlib.Path(__file__).with_name("password_hashes.json")

ASCII = "correct horse battery staple"
# Non-ASCII in both the 2-byte (ä, ö) and 3-byte (✓) UTF-8 ranges: every library hashes
# the UTF-8 bytes, and a verifier that hashes anything else (chars, Latin-1) must fail.
UNICODE = "pässwörd ✓"

ARGON2 = f"argon2-cffi {version('argon2-cffi')}"
BCRYPT = f"bcrypt {version('bcrypt')}"
WERKZEUG = f"werkzeug {version('werkzeug')}"


def argon2_vectors():
    default = argon2.PasswordHasher()
    # Small memory/time cost keeps the Rust test fast; the parameters travel in the PHC
    # string, so the verifier must honour them rather than assume the defaults.
    low = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    for hasher, pw in ((default, ASCII), (low, ASCII), (low, UNICODE)):
        yield "argon2id", ARGON2, pw, hasher.hash(pw)


def bcrypt_vectors():
    def flask_bcrypt(pw, rounds):
        # Exactly what Flask-Bcrypt's generate_password_hash stores.
        return bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds)).decode()

    cost4 = flask_bcrypt(ASCII, 4)
    yield "bcrypt-2b", BCRYPT, ASCII, cost4
    yield "bcrypt-2b", BCRYPT, ASCII, flask_bcrypt(ASCII, 12)
    yield "bcrypt-2b", BCRYPT, UNICODE, flask_bcrypt(UNICODE, 4)
    # $2a$/$2y$ hashes (older PHP/Java/passlib stores) are derived by swapping the prefix.
    # That is exact for these passwords: $2b$ only fixed a length wrap-around for passwords
    # of 255+ bytes, and $2y$ is PHP's name for the same algorithm as $2b$.
    yield "bcrypt-2a", BCRYPT, ASCII, "$2a$" + cost4[4:]
    yield "bcrypt-2y", BCRYPT, UNICODE, "$2y$" + flask_bcrypt(UNICODE, 4)[4:]


def werkzeug_vectors():
    for scheme, method, pw in (
        # Bare "pbkdf2:sha256" stores this Werkzeug release's default iteration count.
        ("werkzeug-pbkdf2-sha256", "pbkdf2:sha256", ASCII),
        ("werkzeug-pbkdf2-sha256", "pbkdf2:sha256:1000", ASCII),
        ("werkzeug-pbkdf2-sha256", "pbkdf2:sha256:1000", UNICODE),
        # Werkzeug's default method; stored as scrypt:32768:8:1$salt$hex.
        ("werkzeug-scrypt", "scrypt", ASCII),
        ("werkzeug-scrypt", "scrypt", UNICODE),
    ):
        yield scheme, WERKZEUG, pw, generate_password_hash(pw, method=method)


def self_check(scheme, pw, h):
    """Only write vectors that the producing library itself accepts."""
    if scheme == "argon2id":
        try:
            return argon2.PasswordHasher().verify(h, pw)
        except argon2.exceptions.VerifyMismatchError:
            return False
    if scheme.startswith("bcrypt"):
        return bcrypt.checkpw(pw.encode(), h.encode())
    return check_password_hash(h, pw)


def main():
    vectors = []
    for source in (argon2_vectors, bcrypt_vectors, werkzeug_vectors):
        for scheme, library, pw, h in source():
            assert self_check(scheme, pw, h), (scheme, h)
            assert not self_check(scheme, pw + "x", h), (scheme, h)
            vectors.append({"scheme": scheme, "library": library, "password": pw, "hash": h})
    OUT.write_text(json.dumps(vectors, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(vectors)} vectors to {OUT}")


if __name__ == "__main__":
    main()
