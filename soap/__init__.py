"""The upstream: the UWS v2 SOAP contract (WSDL), its client and its simulator."""
