-- When the overdue pass first took an unpaid renewal's suspension step (unix
-- microseconds): its accounts are terminated no sooner than the termination grace less the
-- suspension grace after it, so an outage that began after the warning never skips the
-- suspension (found by review of the time-travel fix). NULL: not taken yet. Keep in step
-- with ../postgres/.
ALTER TABLE invoices ADD COLUMN suspension_step_at INTEGER;
