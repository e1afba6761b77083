-- A rotated webhook secret keeps signing beside the new one until `previous_until`
-- (microseconds), so receivers can change theirs without refusing deliveries meanwhile
-- (as Stripe's rolled secrets do). Sealed as `secret` is. Keep in step with ../sqlite/.
ALTER TABLE webhook_endpoints ADD COLUMN previous_secret TEXT;
ALTER TABLE webhook_endpoints ADD COLUMN previous_until BIGINT;
