-- Tables and indexes of compressor anomaly detection for postgresql, from db/schema.py (default
-- settings: source table compressor_telemetry with the default signals). Rewrite with
-- `python sql/generate.py` after changing db/schema.py; the scheduler also creates missing
-- result tables itself. Adapt the source table to the plant's own table and column names.

CREATE TABLE compressor_telemetry (
	timestamp TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	compressor_id VARCHAR(64) NOT NULL,
	filter_dp DOUBLE PRECISION,
	seal_gas_flow DOUBLE PRECISION,
	seal_gas_diff_pressure DOUBLE PRECISION,
	seal_gas_temp DOUBLE PRECISION,
	primary_vent_flow DOUBLE PRECISION,
	primary_vent_pressure DOUBLE PRECISION,
	secondary_seal_gas_flow DOUBLE PRECISION,
	separation_seal_gas_flow DOUBLE PRECISION,
	separation_seal_gas_pressure DOUBLE PRECISION,
	seal_gas_to_vent_diff_pressure DOUBLE PRECISION,
	flow DOUBLE PRECISION,
	suction_pressure DOUBLE PRECISION,
	discharge_pressure DOUBLE PRECISION,
	vibration DOUBLE PRECISION,
	motor_current DOUBLE PRECISION,
	temperature DOUBLE PRECISION,
	label SMALLINT
);
CREATE INDEX ix_compressor_telemetry_compressor_time ON compressor_telemetry (compressor_id, timestamp);

CREATE TABLE lstm_predictions_detailed (
	id BIGSERIAL NOT NULL,
	batch_id VARCHAR(40) NOT NULL,
	compressor_id VARCHAR(64) NOT NULL,
	window_end TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	model_version VARCHAR(40) NOT NULL,
	score DOUBLE PRECISION NOT NULL,
	threshold DOUBLE PRECISION NOT NULL,
	is_anomaly BOOLEAN NOT NULL,
	consecutive_count INTEGER NOT NULL,
	triggered BOOLEAN NOT NULL,
	top_features VARCHAR(200),
	in_alert BOOLEAN,
	alarm_state VARCHAR(100),
	operating_mode VARCHAR(16),
	maintenance BOOLEAN,
	err_filter_dp DOUBLE PRECISION,
	err_seal_gas_flow DOUBLE PRECISION,
	err_seal_gas_diff_pressure DOUBLE PRECISION,
	err_seal_gas_temp DOUBLE PRECISION,
	err_primary_vent_flow DOUBLE PRECISION,
	err_primary_vent_pressure DOUBLE PRECISION,
	err_secondary_seal_gas_flow DOUBLE PRECISION,
	err_separation_seal_gas_flow DOUBLE PRECISION,
	err_separation_seal_gas_pressure DOUBLE PRECISION,
	err_seal_gas_to_vent_diff_pressure DOUBLE PRECISION,
	err_flow DOUBLE PRECISION,
	err_suction_pressure DOUBLE PRECISION,
	err_discharge_pressure DOUBLE PRECISION,
	err_vibration DOUBLE PRECISION,
	err_motor_current DOUBLE PRECISION,
	err_temperature DOUBLE PRECISION,
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	PRIMARY KEY (id),
	CONSTRAINT uq_detailed_window UNIQUE (compressor_id, window_end, model_version)
);
CREATE INDEX ix_detailed_compressor_time ON lstm_predictions_detailed (compressor_id, window_end);

CREATE TABLE lstm_batch_summary (
	id BIGSERIAL NOT NULL,
	batch_id VARCHAR(40) NOT NULL,
	compressor_id VARCHAR(64) NOT NULL,
	mode VARCHAR(16) NOT NULL,
	range_start TIMESTAMP WITHOUT TIME ZONE,
	range_end TIMESTAMP WITHOUT TIME ZONE,
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
	duration_s DOUBLE PRECISION NOT NULL,
	status VARCHAR(16) NOT NULL,
	message VARCHAR(1000),
	started_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	finished_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	PRIMARY KEY (id)
);
CREATE INDEX ix_summary_compressor_time ON lstm_batch_summary (compressor_id, started_at);

CREATE TABLE anomaly_detection_results (
	id BIGSERIAL NOT NULL,
	compressor_id VARCHAR(64) NOT NULL,
	timestamp TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	model_version VARCHAR(40) NOT NULL,
	score DOUBLE PRECISION NOT NULL,
	is_anomaly BOOLEAN NOT NULL,
	PRIMARY KEY (id),
	CONSTRAINT uq_results_point UNIQUE (compressor_id, timestamp, model_version)
);

CREATE TABLE lstm_scheduler_checkpoint (
	compressor_id VARCHAR(64) NOT NULL,
	last_timestamp TIMESTAMP WITHOUT TIME ZONE,
	consecutive_count INTEGER NOT NULL,
	alarm_state VARCHAR(100),
	model_version VARCHAR(40),
	lease_owner VARCHAR(100),
	lease_expires_at TIMESTAMP WITHOUT TIME ZONE,
	updated_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	PRIMARY KEY (compressor_id)
);

CREATE TABLE lstm_source_day_counts (
	compressor_id VARCHAR(64) NOT NULL,
	day_start TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	row_count INTEGER NOT NULL,
	counted_through TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	PRIMARY KEY (compressor_id, day_start)
);

CREATE TABLE alert_episodes (
	id BIGSERIAL NOT NULL,
	compressor_id VARCHAR(64) NOT NULL,
	model_version VARCHAR(40) NOT NULL,
	start_time TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	end_time TIMESTAMP WITHOUT TIME ZONE,
	peak_score DOUBLE PRECISION NOT NULL,
	peak_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	threshold DOUBLE PRECISION NOT NULL,
	top_features VARCHAR(200),
	state VARCHAR(16) NOT NULL,
	acknowledged_by VARCHAR(100),
	acknowledged_at TIMESTAMP WITHOUT TIME ZONE,
	closed_by VARCHAR(100),
	closed_at TIMESTAMP WITHOUT TIME ZONE,
	note VARCHAR(1000),
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	updated_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	PRIMARY KEY (id),
	CONSTRAINT uq_episode_start UNIQUE (compressor_id, model_version, start_time)
);
CREATE INDEX ix_episodes_state ON alert_episodes (state, start_time);

CREATE TABLE maintenance_windows (
	id BIGSERIAL NOT NULL,
	compressor_id VARCHAR(64) NOT NULL,
	starts_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	ends_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	reason VARCHAR(1000) NOT NULL,
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	PRIMARY KEY (id)
);
CREATE INDEX ix_maintenance_compressor_time ON maintenance_windows (compressor_id, starts_at);

CREATE TABLE alert_notifications (
	id BIGSERIAL NOT NULL,
	idempotency_key VARCHAR(64) NOT NULL,
	channel VARCHAR(16) NOT NULL,
	kind VARCHAR(16) NOT NULL,
	compressor_id VARCHAR(64) NOT NULL,
	episode_start TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	model_version VARCHAR(40) NOT NULL,
	payload VARCHAR(4000) NOT NULL,
	status VARCHAR(16) NOT NULL,
	attempts INTEGER NOT NULL,
	next_attempt_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	claimed_until TIMESTAMP WITHOUT TIME ZONE,
	last_error VARCHAR(1000),
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	sent_at TIMESTAMP WITHOUT TIME ZONE,
	PRIMARY KEY (id),
	CONSTRAINT uq_notification_key UNIQUE (idempotency_key, channel)
);
CREATE INDEX ix_notifications_status ON alert_notifications (status, next_attempt_at);
