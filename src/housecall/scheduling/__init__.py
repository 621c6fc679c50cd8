"""Scheduling: Schedules and Slots per clinician, booking, moving and cancelling Appointments,
calendar files and reminders (decision 0014).

- ``model.py``: what the pages read out of Slots and Appointments (visit mode, times, service).
- ``service.py``: book / reschedule / cancel in one transaction each, the front desk's
  availability, and the ``appointment.remind`` job.
- ``portal.py``: the patient's pages and the home page's upcoming visits; ``staff.py``: the
  clinician's schedule and the front desk's; ``views.py`` installs both.
"""
