"""``Services``: the use cases of one process, as the web layer reaches them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from otpservice.config.live import LiveSettings
    from otpservice.store.audit import AuditLog
    from otpservice.usecases.abuse import AbusePolicy
    from otpservice.usecases.analytics import Analytics
    from otpservice.usecases.events import AppEvents
    from otpservice.usecases.factors import TotpFactors
    from otpservice.usecases.inbound import InboundMessages
    from otpservice.usecases.optouts import OptOuts
    from otpservice.usecases.otp import OtpService
    from otpservice.usecases.privacy import PersonalData


@dataclass(frozen=True, slots=True)
class Services:
    """Every use case, built once per process by the runtime (``runtime.build_services``)."""

    otp: OtpService
    abuse: AbusePolicy
    analytics: Analytics
    optouts: OptOuts
    inbound: InboundMessages
    personal_data: PersonalData
    totp: TotpFactors
    events: AppEvents
    # Operators' changes are recorded by the routes that make them, with the client's name.
    audit: AuditLog
    live: LiveSettings
