"""What ``config check`` prints: the effective limits and abuse rules, as tables."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from otpservice.config.schema import Settings


def limits_table(settings: Settings) -> str:
    """The effective limits, one per line, for ``config check``."""
    rows: list[tuple[str, Any]] = [
        ("code.digits", settings.code.digits),
        ("code.ttl_seconds", settings.code.ttl_seconds),
        ("code.max_attempts", settings.code.max_attempts),
        ("code.tombstone_seconds", settings.code.tombstone_seconds),
        ("lockout.max_failures", settings.lockout.max_failures),
        ("lockout.base_seconds", settings.lockout.base_seconds),
        ("lockout.max_seconds", settings.lockout.max_seconds),
        ("lockout.memory_seconds", settings.lockout.memory_seconds),
        ("send_limits.min_interval_seconds", settings.send_limits.min_interval_seconds),
        ("send_limits.per_hour", settings.send_limits.per_hour),
        ("send_limits.per_day", settings.send_limits.per_day),
        ("hashing.memory_kib", settings.hashing.memory_kib),
        ("hashing.time_cost", settings.hashing.time_cost),
        ("hashing.parallelism", settings.hashing.parallelism),
        ("hashing.max_concurrent (effective)", settings.hashing.concurrency),
        ("hashing.max_waiting", settings.hashing.max_waiting),
        ("workers", settings.workers),
        (
            "api_tokens",
            ", ".join(t.client for t in settings.api_tokens) or "(none: trust loopback)",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    table = "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)
    return f"{table}\n\n{abuse_table(settings)}"


def abuse_table(settings: Settings) -> str:
    """The abuse rules, geo permissions, fraud guard and safe list, as a table."""
    abuse = settings.abuse
    rows = [("rule", "scope", "windows", "mode")]
    for rule in abuse.rules:
        scope: str = rule.scope
        if rule.scope == "ip_prefix":
            scope += f" (/{rule.ipv4_prefix}, /{rule.ipv6_prefix})"
        elif rule.scope == "prefix":
            scope += f" ({rule.prefix_digits} digits)"
        windows = ", ".join(f"{w.limit}/{_duration(w.seconds)}" for w in rule.windows)
        rows.append((rule.name, scope, windows, rule.mode))
    geo, guard = abuse.geo, abuse.fraud_guard
    rows.append(
        ("geo", "countries", _allow_deny(geo.allow_countries, geo.deny_countries), geo.mode)
    )
    rows.append(("geo", "prefixes", _allow_deny(geo.allow_prefixes, geo.deny_prefixes), geo.mode))
    rows.append(
        ("geo", "number types", "deny " + (", ".join(geo.deny_number_types) or "none"), geo.mode)
    )
    trip = f"verified/sent < {guard.floor} after {guard.min_sent} sent"
    rows.append(
        (
            "fraud_guard",
            f"country, prefix ({guard.prefix_digits} digits)",
            f"{trip} in {_duration(guard.window_seconds)}",
            guard.mode if guard.enabled else "off",
        )
    )
    safe = abuse.safe_list
    rows.append(
        ("safe_list", "exempt", f"{len(safe.numbers)} numbers, {len(safe.prefixes)} prefixes", "-")
    )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
    )


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _allow_deny(allow: list[str], deny: list[str]) -> str:
    return f"allow {', '.join(allow) or 'all'}; deny {', '.join(deny) or 'none'}"
