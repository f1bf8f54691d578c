"""Every controller of the audit slice, registered together by app.api.app."""

from __future__ import annotations

from app.api.audit import AuditController
from app.api.audit_checkpoints import AuditCheckpointsController
from app.api.audit_export import AuditExportController
from app.api.audit_stream import AuditStreamController

AUDIT_CONTROLLERS = [AuditController, AuditExportController, AuditCheckpointsController,
                     AuditStreamController]
