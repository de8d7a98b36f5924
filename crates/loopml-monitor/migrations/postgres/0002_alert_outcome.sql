-- What became of the pipeline an alert started: its run and how it ended.
ALTER TABLE monitor_alerts ADD COLUMN pipeline_run TEXT;
ALTER TABLE monitor_alerts ADD COLUMN pipeline_outcome TEXT;
