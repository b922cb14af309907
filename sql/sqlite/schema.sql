-- Tables and indexes of compressor anomaly detection for sqlite, from db/schema.py (default
-- settings: source table compressor_telemetry with the default signals). Rewrite with
-- `python sql/generate.py` after changing db/schema.py; the scheduler also creates missing
-- result tables itself. Adapt the source table to the plant's own table and column names.

CREATE TABLE compressor_telemetry (
	timestamp DATETIME NOT NULL,
	compressor_id VARCHAR(64) NOT NULL,
	filter_dp DOUBLE,
	seal_gas_flow DOUBLE,
	seal_gas_diff_pressure DOUBLE,
	seal_gas_temp DOUBLE,
	primary_vent_flow DOUBLE,
	primary_vent_pressure DOUBLE,
	secondary_seal_gas_flow DOUBLE,
	separation_seal_gas_flow DOUBLE,
	separation_seal_gas_pressure DOUBLE,
	seal_gas_to_vent_diff_pressure DOUBLE,
	flow DOUBLE,
	suction_pressure DOUBLE,
	discharge_pressure DOUBLE,
	vibration DOUBLE,
	motor_current DOUBLE,
	temperature DOUBLE,
	label SMALLINT
);
CREATE INDEX ix_compressor_telemetry_compressor_time ON compressor_telemetry (compressor_id, timestamp);

CREATE TABLE lstm_predictions_detailed (
	id INTEGER NOT NULL,
	batch_id VARCHAR(40) NOT NULL,
	compressor_id VARCHAR(64) NOT NULL,
	window_end DATETIME NOT NULL,
	model_version VARCHAR(40) NOT NULL,
	score DOUBLE NOT NULL,
	threshold DOUBLE NOT NULL,
	is_anomaly BOOLEAN NOT NULL,
	consecutive_count INTEGER NOT NULL,
	triggered BOOLEAN NOT NULL,
	top_features VARCHAR(200),
	in_alert BOOLEAN,
	alarm_state VARCHAR(100),
	operating_mode VARCHAR(16),
	maintenance BOOLEAN,
	err_filter_dp DOUBLE,
	err_seal_gas_flow DOUBLE,
	err_seal_gas_diff_pressure DOUBLE,
	err_seal_gas_temp DOUBLE,
	err_primary_vent_flow DOUBLE,
	err_primary_vent_pressure DOUBLE,
	err_secondary_seal_gas_flow DOUBLE,
	err_separation_seal_gas_flow DOUBLE,
	err_separation_seal_gas_pressure DOUBLE,
	err_seal_gas_to_vent_diff_pressure DOUBLE,
	err_flow DOUBLE,
	err_suction_pressure DOUBLE,
	err_discharge_pressure DOUBLE,
	err_vibration DOUBLE,
	err_motor_current DOUBLE,
	err_temperature DOUBLE,
	created_at DATETIME NOT NULL,
	PRIMARY KEY (id),
	CONSTRAINT uq_detailed_window UNIQUE (compressor_id, window_end, model_version)
);
CREATE INDEX ix_detailed_compressor_time ON lstm_predictions_detailed (compressor_id, window_end);

CREATE TABLE lstm_batch_summary (
	id INTEGER NOT NULL,
	batch_id VARCHAR(40) NOT NULL,
	compressor_id VARCHAR(64) NOT NULL,
	mode VARCHAR(16) NOT NULL,
	range_start DATETIME,
	range_end DATETIME,
	rows_read INTEGER NOT NULL,
	windows_scored INTEGER NOT NULL,
	anomaly_points INTEGER NOT NULL,
	triggered_events INTEGER NOT NULL,
	rows_rejected INTEGER NOT NULL,
	rejection_reasons VARCHAR(1000),
	gaps INTEGER NOT NULL,
	maintenance_windows INTEGER,
	stopped_windows INTEGER,
	model_version VARCHAR(40),
	duration_s DOUBLE NOT NULL,
	status VARCHAR(16) NOT NULL,
	message VARCHAR(1000),
	started_at DATETIME NOT NULL,
	finished_at DATETIME NOT NULL,
	PRIMARY KEY (id)
);
CREATE INDEX ix_summary_compressor_time ON lstm_batch_summary (compressor_id, started_at);

CREATE TABLE anomaly_detection_results (
	id INTEGER NOT NULL,
	compressor_id VARCHAR(64) NOT NULL,
	timestamp DATETIME NOT NULL,
	model_version VARCHAR(40) NOT NULL,
	score DOUBLE NOT NULL,
	is_anomaly BOOLEAN NOT NULL,
	PRIMARY KEY (id),
	CONSTRAINT uq_results_point UNIQUE (compressor_id, timestamp, model_version)
);

CREATE TABLE lstm_scheduler_checkpoint (
	compressor_id VARCHAR(64) NOT NULL,
	last_timestamp DATETIME,
	consecutive_count INTEGER NOT NULL,
	alarm_state VARCHAR(100),
	model_version VARCHAR(40),
	lease_owner VARCHAR(100),
	lease_expires_at DATETIME,
	updated_at DATETIME NOT NULL,
	PRIMARY KEY (compressor_id)
);

CREATE TABLE lstm_source_day_counts (
	compressor_id VARCHAR(64) NOT NULL,
	day_start DATETIME NOT NULL,
	row_count INTEGER NOT NULL,
	counted_through DATETIME NOT NULL,
	PRIMARY KEY (compressor_id, day_start)
);

CREATE TABLE alert_episodes (
	id INTEGER NOT NULL,
	compressor_id VARCHAR(64) NOT NULL,
	model_version VARCHAR(40) NOT NULL,
	start_time DATETIME NOT NULL,
	end_time DATETIME,
	peak_score DOUBLE NOT NULL,
	peak_at DATETIME NOT NULL,
	threshold DOUBLE NOT NULL,
	top_features VARCHAR(200),
	state VARCHAR(16) NOT NULL,
	acknowledged_by VARCHAR(100),
	acknowledged_at DATETIME,
	closed_by VARCHAR(100),
	closed_at DATETIME,
	note VARCHAR(1000),
	created_at DATETIME NOT NULL,
	updated_at DATETIME NOT NULL,
	PRIMARY KEY (id),
	CONSTRAINT uq_episode_start UNIQUE (compressor_id, model_version, start_time)
);
CREATE INDEX ix_episodes_state ON alert_episodes (state, start_time);

CREATE TABLE maintenance_windows (
	id INTEGER NOT NULL,
	compressor_id VARCHAR(64) NOT NULL,
	starts_at DATETIME NOT NULL,
	ends_at DATETIME NOT NULL,
	reason VARCHAR(1000) NOT NULL,
	created_at DATETIME NOT NULL,
	PRIMARY KEY (id)
);
CREATE INDEX ix_maintenance_compressor_time ON maintenance_windows (compressor_id, starts_at);

CREATE TABLE alert_notifications (
	id INTEGER NOT NULL,
	idempotency_key VARCHAR(64) NOT NULL,
	channel VARCHAR(16) NOT NULL,
	kind VARCHAR(16) NOT NULL,
	compressor_id VARCHAR(64) NOT NULL,
	episode_start DATETIME NOT NULL,
	model_version VARCHAR(40) NOT NULL,
	payload VARCHAR(4000) NOT NULL,
	status VARCHAR(16) NOT NULL,
	attempts INTEGER NOT NULL,
	next_attempt_at DATETIME NOT NULL,
	claimed_until DATETIME,
	last_error VARCHAR(1000),
	created_at DATETIME NOT NULL,
	sent_at DATETIME,
	PRIMARY KEY (id),
	CONSTRAINT uq_notification_key UNIQUE (idempotency_key, channel)
);
CREATE INDEX ix_notifications_status ON alert_notifications (status, next_attempt_at);
