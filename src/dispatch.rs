//! Queue → modem pool → results: retries, deadlines, status-report correlation by TP-MR.
