"""Names fixed by the UWS v2 wire contract, shared by the client and the simulator."""

from pathlib import Path

WSDL_DIR = Path(__file__).parent / "wsdl"
DEVICE_WSDL = WSDL_DIR / "DeviceService.wsdl"
SESSION_WSDL = WSDL_DIR / "SessionService.wsdl"

DEVICE_PATH = "DeviceService.svc"
SESSION_PATH = "SessionService.svc"

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
V2 = "http://nphase.com/unifiedwebservice/v2"
_CONTRACT = "http://schemas.datacontract.org/2004/07/NPhase.UnifiedWebService.APIs.v2.Contract"
COMMON = f"{_CONTRACT}.Common"
DEVICE = f"{_CONTRACT}.DeviceService"
SESSION = f"{_CONTRACT}.SessionService"
XSI = "http://www.w3.org/2001/XMLSchema-instance"

DEVICE_BINDING = f"{{{V2}}}BasicHttpBinding_IDeviceService"
SESSION_BINDING = f"{{{V2}}}BasicHttpBinding_ISessionService"


def soap_action(interface: str, operation: str) -> str:
    return f"{V2}/{interface}/{operation}"


HISTORY_PAGE_CAP = 500
"""GetDeviceProvisioningHistory returns at most this many events a call."""
DEVICE_LIST_PAGE_CAP = 2000
"""GetDeviceList returns at most this many devices a call."""

# Fault codes as clients match them: without the leading service name
# ("UnifiedWebService.", "DeviceService.", "SessionService.").
SESSION_EXPIRED = "REQUEST_FAILED.SessionToken.Expired"
SESSION_INVALID = "REQUEST_FAILED.SessionToken.Invalid"
LOGIN_FAILED = "REQUEST_FAILED.InvalidCredentials"
DEVICE_NOT_FOUND = "REQUEST_FAILED.DeviceNotFound"
INPUT_INVALID = "INPUT_INVALID"


def strip_service_prefix(code: str) -> str:
    """'UnifiedWebService.REQUEST_FAILED.AccountNotFound' -> 'REQUEST_FAILED.AccountNotFound'."""
    head, _, rest = code.partition(".")
    return rest if rest and not head.isupper() else code
