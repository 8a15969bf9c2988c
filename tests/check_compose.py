"""Structural checks of docker/compose.yml, for CI machines without a Docker engine.

`docker compose config` would need the engine's CLI; these checks catch the mistakes
that matter here instead: a missing build file or mount source, a literal secret, an
app port published past the gateway, Redis without persistence or a password.

Run: pytest tests/check_compose.py   (needs PyYAML; see tests/requirements.txt)
"""
import pathlib
import re
import shlex

import pytest
import yaml

DOCKER = pathlib.Path(__file__).resolve().parent.parent / "docker"
COMPOSE_FILE = DOCKER / "compose.yml"
SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN", re.I)
# A required variable: compose aborts with the message when it is unset or empty.
REQUIRED_REF = re.compile(r"\$\{[A-Z][A-Z0-9_]*:\?[^}]*\}")
ANY_REF = re.compile(r"\$\{([A-Z][A-Z0-9_]*)(?::?[-?+][^}]*)?\}")


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose):
    return compose["services"]


def env_of(service):
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", ...] form
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


def command_of(service):
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def dockerfile_of(service):
    build = service["build"]
    if isinstance(build, str):
        build = {"context": build}
    context = (DOCKER / build.get("context", ".")).resolve()
    return context, context / build.get("dockerfile", "Dockerfile")


def strings_in(node):
    """Every string in the parsed file: comments may mention ${VAR} without using it."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from strings_in(k)
            yield from strings_in(v)
    elif isinstance(node, list):
        for v in node:
            yield from strings_in(v)
    elif isinstance(node, str):
        yield node


def has_healthcheck(service):
    if "healthcheck" in service:
        return not service["healthcheck"].get("disable", False)
    if "build" not in service:
        return False  # a pulled image's HEALTHCHECK cannot be checked from here
    return any(line.strip().upper().startswith("HEALTHCHECK")
               for line in dockerfile_of(service)[1].read_text().splitlines())


def test_every_service_has_image_or_build(services):
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, f"{name}: needs image: or build:"


def test_build_contexts_and_dockerfiles_exist(services):
    for name, svc in services.items():
        if "build" in svc:
            context, dockerfile = dockerfile_of(svc)
            assert context.is_dir(), f"{name}: build context {context} missing"
            assert dockerfile.is_file(), f"{name}: Dockerfile {dockerfile} missing"


def test_bind_mount_sources_exist(services):
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            source = vol.split(":", 1)[0] if isinstance(vol, str) else vol.get("source", "")
            if source.startswith((".", "/")):
                assert (DOCKER / source).exists(), f"{name}: mount source {source} missing"


def test_gateway_has_healthcheck(services):
    assert has_healthcheck(services["gateway"]), "gateway: no healthcheck in compose or its Dockerfile"


def test_service_healthy_dependencies_have_healthchecks(services):
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        for dep, cond in (deps.items() if isinstance(deps, dict) else ((d, {}) for d in deps)):
            assert dep in services, f"{name}: depends on unknown service {dep}"
            if (cond or {}).get("condition") == "service_healthy":
                assert has_healthcheck(services[dep]), f"{name} waits for {dep} to be healthy; it has no healthcheck"


def test_no_literal_secrets(services):
    for name, svc in services.items():
        build = svc.get("build")
        args = build.get("args", {}) if isinstance(build, dict) else {}
        for key, value in {**env_of(svc), **args}.items():
            if SECRET_KEY.search(key):
                assert value is not None and REQUIRED_REF.fullmatch(str(value)), (
                    f"{name}: {key} must be a required reference like ${{{key}:?message}}, got {value!r}")
        cmd = command_of(svc)
        for flag, value in zip(cmd, cmd[1:]):
            if flag.startswith("-") and (SECRET_KEY.search(flag) or flag in ("--requirepass", "--masterauth")):
                assert REQUIRED_REF.fullmatch(value), f"{name}: {flag} takes a literal {value!r}"


def test_secret_variables_are_all_required(compose):
    # One ${X} next to another ${X:?...} would let X default to empty in that spot.
    text = "\n".join(strings_in(compose))
    for ref in re.finditer(r"\$\{[^}]*\}", text):
        var = ANY_REF.fullmatch(ref.group()).group(1)
        if SECRET_KEY.search(var):
            assert REQUIRED_REF.fullmatch(ref.group()), f"{ref.group()}: secret variable not required with :?"


def test_env_example_lists_every_required_variable(compose):
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*):\?", "\n".join(strings_in(compose))))
    example = DOCKER / ".env.example"
    listed = {line.split("=", 1)[0].strip() for line in example.read_text().splitlines()
              if "=" in line and not line.lstrip().startswith("#")}
    assert used <= listed, f"missing from {example.name}: {sorted(used - listed)}"
    for line in example.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            assert line.split("=", 1)[1].strip() == "", f"{example.name} must not hold values: {line}"


def test_redis_persists_and_requires_password(services):
    cmd = command_of(services["redis"])
    assert "--appendonly" in cmd and cmd[cmd.index("--appendonly") + 1] == "yes", "redis: AOF not enabled"
    assert "--requirepass" in cmd, "redis: no --requirepass"
    assert any(v.split(":", 1)[1].rstrip("/") == "/data" for v in services["redis"].get("volumes", [])
               if isinstance(v, str) and ":" in v), "redis: /data is not on a volume; AOF would not survive"


def test_app_is_not_published(services):
    assert "ports" not in services["app"], "app: trusts identity headers, so it must only be reachable via the gateway"


def test_gateway_config_mounted(services):
    targets = [v.split(":")[1] for v in services["gateway"].get("volumes", []) if isinstance(v, str)]
    assert "/etc/gateway/gateway.toml" in targets


SENTINEL_SERVICES = {"redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"}


def profiles_of(service):
    return set(service.get("profiles") or [])


def sentinel_config(service):
    """The sentinel.conf lines a sentinel service writes at start (`sh -c` script)."""
    script = command_of(service)[-1]
    return [line.strip() for line in script.splitlines() if line.strip().startswith(("sentinel ", "port ", "requirepass "))]


def test_sentinel_profile_holds_a_replica_and_three_sentinels(services):
    in_profile = {name for name, svc in services.items() if "sentinel" in profiles_of(svc)}
    assert in_profile == SENTINEL_SERVICES
    # The default `up` needs none of them, and nothing outside the profile waits for them
    # (compose refuses to start a service depending on an inactive profile's).
    for name, svc in services.items():
        if name in SENTINEL_SERVICES:
            continue
        assert not profiles_of(svc), f"{name}: must start without a profile"
        deps = svc.get("depends_on") or {}
        assert not SENTINEL_SERVICES & set(deps), f"{name}: depends on a profile-only service"
    for name in SENTINEL_SERVICES:
        svc = services[name]
        assert "ports" not in svc, f"{name}: nothing of the Sentinel setup is published"
        assert svc.get("networks") == ["datanet"], f"{name}: belongs on the internal data network"
        assert has_healthcheck(svc), f"{name}: no healthcheck"


def test_the_replica_follows_redis_with_the_password(services):
    cmd = command_of(services["redis-replica"])
    assert cmd[cmd.index("--replicaof") + 1:cmd.index("--replicaof") + 3] == ["redis", "6379"]
    assert "--appendonly" in cmd and cmd[cmd.index("--appendonly") + 1] == "yes"
    for flag in ("--requirepass", "--masterauth"):
        assert REQUIRED_REF.fullmatch(cmd[cmd.index(flag) + 1]), f"redis-replica: {flag}"
    # After a failover the old primary becomes a replica and must authenticate too.
    primary = command_of(services["redis"])
    assert REQUIRED_REF.fullmatch(primary[primary.index("--masterauth") + 1]), "redis: no --masterauth"


def test_sentinels_watch_redis_with_a_majority_quorum(services):
    sentinels = sorted(SENTINEL_SERVICES - {"redis-replica"})
    for name in sentinels:
        svc = services[name]
        config = sentinel_config(svc)
        monitor = next(line.split() for line in config if line.startswith("sentinel monitor "))
        _, _, master, host, port, quorum = monitor
        assert (master, host, port) == ("mymaster", "redis", "6379"), f"{name}: {monitor}"
        assert len(sentinels) // 2 < int(quorum) <= len(sentinels), f"{name}: quorum {quorum} is not a majority"
        assert "sentinel resolve-hostnames yes" in config, f"{name}: `redis` is a host name"
        # The password reaches the config through the container's environment, never this file.
        for line in config:
            if line.startswith(("sentinel auth-pass", "requirepass")):
                assert line.endswith("$$REDIS_PASSWORD"), f"{name}: {line}"
        assert REQUIRED_REF.fullmatch(str(env_of(svc)["REDIS_PASSWORD"])), f"{name}: REDIS_PASSWORD"


def test_the_gateway_settings_for_the_sentinels_pass_check_config(tmp_path):
    """The lines the compose file tells the operator to put into docker/gateway.toml."""
    import subprocess

    header = COMPOSE_FILE.read_text().split("\nname:", 1)[0]
    lines = [line.lstrip("# ").rstrip() for line in header.splitlines()]
    snippet = [line for line in lines if line.startswith(("sentinels =", "sentinel_master =", "sentinel_password_env ="))]
    assert len(snippet) == 3, snippet
    config = (DOCKER / "gateway.toml").read_text()
    url_line = next(line for line in config.splitlines() if line.startswith("url = \"redis://redis:"))
    # `app` resolves only inside compose (tests/it/example_configs.rs does the same).
    config = config.replace(url_line, "\n".join(snippet)).replace('"app:5001"', '"localhost:5001"')
    (tmp_path / "gateway.toml").write_text(config)
    gateway = DOCKER.parent / "target" / "debug" / "gateway"
    if not gateway.exists():
        pytest.skip("build the gateway first (cargo build)")
    env = {"PATH": "/usr/bin:/bin",
           "GATEWAY_SESSION_SECRET": "0123456789abcdef0123456789abcdef-ci",
           "GATEWAY_IDENTITY_SECRET": "fedcba9876543210fedcba9876543210-ci",
           "GATEWAY_ADMIN_TOKEN": "admin-token-for-ci-only", "REDIS_PASSWORD": "redis-password",
           "DATABASE_URL": "postgres://whalefall:pw@postgres:5432/whalefall"}
    out = subprocess.run([str(gateway), "check-config", "--config", str(tmp_path / "gateway.toml")],
                         capture_output=True, text=True, env=env, cwd=DOCKER)
    assert out.returncode == 0, out.stdout + out.stderr


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "-q"]))


def test_paths_the_app_exempts_are_public_at_the_gateway():
    """gateway_auth.EXEMPT_PATHS is the app's one list of paths served without an assertion;
    the gateway sends no assertion only on its public paths, so each must be public there."""
    import ast
    import tomllib

    source = (DOCKER / "app" / "gateway_auth.py").read_text()
    exempt = next(ast.literal_eval(node.value) for node in ast.parse(source).body
                  if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "EXEMPT_PATHS")
    assert "/api/v1/health/" in exempt
    public = tomllib.loads((DOCKER / "gateway.toml").read_text())["access"]["public"]
    assert set(exempt) <= set(public), f"exempt in the app but not public at the gateway: {set(exempt) - set(public)}"
