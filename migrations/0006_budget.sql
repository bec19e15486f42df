-- Upload budgets (`max_upload_per_day`, `max_messages_per_minute`): when a
-- pass stops appending because a budget is spent, it records until when and
-- why, for `status`, the status page and the metrics. Cleared by the next
-- pass that is not stopped by a budget.
ALTER TABLE accounts ADD COLUMN paused_until INTEGER;   -- unix seconds
ALTER TABLE accounts ADD COLUMN paused_reason TEXT;
