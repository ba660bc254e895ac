"""The HTTP layer: thin handlers, wire schemas, authentication and problem mapping."""

from __future__ import annotations

from otpservice.web.analytics import ANALYTICS_ROUTES
from otpservice.web.challenges import CHALLENGE_ROUTES
from otpservice.web.factors import FACTOR_ROUTES
from otpservice.web.fraud import FRAUD_ROUTES
from otpservice.web.health import HEALTH_ROUTES
from otpservice.web.optouts import OPT_OUT_ROUTES
from otpservice.web.privacy import PRIVACY_ROUTES
from otpservice.web.webhooks import WEBHOOK_ROUTES

ROUTES = [
    *CHALLENGE_ROUTES,
    *FACTOR_ROUTES,
    *HEALTH_ROUTES,
    *OPT_OUT_ROUTES,
    *PRIVACY_ROUTES,
    *FRAUD_ROUTES,
    *ANALYTICS_ROUTES,
    *WEBHOOK_ROUTES,
]

__all__ = ["ROUTES"]
