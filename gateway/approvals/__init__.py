"""Just-in-time human approval of single requests (policy `action = "approve"`).

state.py is the state machine, store.py keeps approvals, service.py ties them to the audit log
and the webhook, flow.py is the hold and ticket flows on the request path, api.py and page.py
serve approvers, cli.py is `gateway approvals`.
"""

from gateway.approvals.flow import Ticket, gate
from gateway.approvals.service import Approvals
from gateway.approvals.state import Approval

__all__ = ["Approval", "Approvals", "Ticket", "gate"]
