"""Plain functions that hold the service's logic; routers stay thin."""
