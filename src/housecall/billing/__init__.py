"""Bills: statements (FHIR Invoices), what is still owed on them, and paying them by card through a
``PaymentProvider`` (``payments.py``), each payment written down as FHIR so the same facts show on the
API. ``views.py`` has the portal's pages."""
