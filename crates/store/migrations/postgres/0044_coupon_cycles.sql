-- The billing cycles a coupon applies to, comma-separated wire names (`monthly`,
-- `annually`); NULL: every cycle. A "first month for 1.00" coupon, a fixed price, sold
-- three years for 1.00 when nothing tied it to the monthly cycle (found by the money
-- audit). Keep in step with the other engine's.
ALTER TABLE coupons ADD COLUMN cycles TEXT;
