-- A refund sent back to a card that the gateway refused (the charge was disputed, or
-- refunded in the gateway's dashboard meanwhile): kept, with when and why it failed, and
-- counted nowhere (the invoice's refunded total gives its amount back). Times in
-- microseconds. Keep in step with ../sqlite/.
ALTER TABLE refunds ADD COLUMN failed_at BIGINT;
ALTER TABLE refunds ADD COLUMN failure TEXT;
