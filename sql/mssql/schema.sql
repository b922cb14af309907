-- Tables and indexes of compressor anomaly detection for mssql, from db/schema.py (default
-- settings: source table compressor_telemetry with the default signals). Rewrite with
-- `python sql/generate.py` after changing db/schema.py; the scheduler also creates missing
-- result tables itself. Adapt the source table to the plant's own table and column names.

CREATE TABLE compressor_telemetry (
	timestamp DATETIME2 NOT NULL,
	compressor_id NVARCHAR(64) NOT NULL,
	filter_dp FLOAT(53) NULL,
	seal_gas_flow FLOAT(53) NULL,
	seal_gas_diff_pressure FLOAT(53) NULL,
	seal_gas_temp FLOAT(53) NULL,
	primary_vent_flow FLOAT(53) NULL,
	primary_vent_pressure FLOAT(53) NULL,
	secondary_seal_gas_flow FLOAT(53) NULL,
	separation_seal_gas_flow FLOAT(53) NULL,
	separation_seal_gas_pressure FLOAT(53) NULL,
	seal_gas_to_vent_diff_pressure FLOAT(53) NULL,
	flow FLOAT(53) NULL,
	suction_pressure FLOAT(53) NULL,
	discharge_pressure FLOAT(53) NULL,
	vibration FLOAT(53) NULL,
	motor_current FLOAT(53) NULL,
	temperature FLOAT(53) NULL,
	label SMALLINT NULL
);
GO
CREATE INDEX ix_compressor_telemetry_compressor_time ON compressor_telemetry (compressor_id, timestamp);
GO

CREATE TABLE lstm_predictions_detailed (
	id BIGINT NOT NULL IDENTITY,
	batch_id NVARCHAR(40) NOT NULL,
	compressor_id NVARCHAR(64) NOT NULL,
	window_end DATETIME2 NOT NULL,
	model_version NVARCHAR(40) NOT NULL,
	score FLOAT(53) NOT NULL,
	threshold FLOAT(53) NOT NULL,
	is_anomaly BIT NOT NULL,
	consecutive_count INTEGER NOT NULL,
	triggered BIT NOT NULL,
	top_features NVARCHAR(200) NULL,
	in_alert BIT NULL,
	alarm_state NVARCHAR(100) NULL,
	operating_mode NVARCHAR(16) NULL,
	maintenance BIT NULL,
	err_filter_dp FLOAT(53) NULL,
	err_seal_gas_flow FLOAT(53) NULL,
	err_seal_gas_diff_pressure FLOAT(53) NULL,
	err_seal_gas_temp FLOAT(53) NULL,
	err_primary_vent_flow FLOAT(53) NULL,
	err_primary_vent_pressure FLOAT(53) NULL,
	err_secondary_seal_gas_flow FLOAT(53) NULL,
	err_separation_seal_gas_flow FLOAT(53) NULL,
	err_separation_seal_gas_pressure FLOAT(53) NULL,
	err_seal_gas_to_vent_diff_pressure FLOAT(53) NULL,
	err_flow FLOAT(53) NULL,
	err_suction_pressure FLOAT(53) NULL,
	err_discharge_pressure FLOAT(53) NULL,
	err_vibration FLOAT(53) NULL,
	err_motor_current FLOAT(53) NULL,
	err_temperature FLOAT(53) NULL,
	created_at DATETIME2 NOT NULL,
	PRIMARY KEY (id),
	CONSTRAINT uq_detailed_window UNIQUE (compressor_id, window_end, model_version)
);
GO
CREATE INDEX ix_detailed_compressor_time ON lstm_predictions_detailed (compressor_id, window_end);
GO

CREATE TABLE lstm_batch_summary (
	id BIGINT NOT NULL IDENTITY,
	batch_id NVARCHAR(40) NOT NULL,
	compressor_id NVARCHAR(64) NOT NULL,
	mode NVARCHAR(16) NOT NULL,
	range_start DATETIME2 NULL,
	range_end DATETIME2 NULL,
	rows_read INTEGER NOT NULL,
	windows_scored INTEGER NOT NULL,
	anomaly_points INTEGER NOT NULL,
	triggered_events INTEGER NOT NULL,
	rows_rejected INTEGER NOT NULL,
	rejection_reasons NVARCHAR(1000) NULL,
	gaps INTEGER NOT NULL,
	maintenance_windows INTEGER NULL,
	stopped_windows INTEGER NULL,
	model_version NVARCHAR(40) NULL,
	duration_s FLOAT(53) NOT NULL,
	status NVARCHAR(16) NOT NULL,
	message NVARCHAR(1000) NULL,
	started_at DATETIME2 NOT NULL,
	finished_at DATETIME2 NOT NULL,
	PRIMARY KEY (id)
);
GO
CREATE INDEX ix_summary_compressor_time ON lstm_batch_summary (compressor_id, started_at);
GO

CREATE TABLE anomaly_detection_results (
	id BIGINT NOT NULL IDENTITY,
	compressor_id NVARCHAR(64) NOT NULL,
	timestamp DATETIME2 NOT NULL,
	model_version NVARCHAR(40) NOT NULL,
	score FLOAT(53) NOT NULL,
	is_anomaly BIT NOT NULL,
	PRIMARY KEY (id),
	CONSTRAINT uq_results_point UNIQUE (compressor_id, timestamp, model_version)
);
GO

CREATE TABLE lstm_scheduler_checkpoint (
	compressor_id NVARCHAR(64) NOT NULL,
	last_timestamp DATETIME2 NULL,
	consecutive_count INTEGER NOT NULL,
	alarm_state NVARCHAR(100) NULL,
	model_version NVARCHAR(40) NULL,
	lease_owner NVARCHAR(100) NULL,
	lease_expires_at DATETIME2 NULL,
	updated_at DATETIME2 NOT NULL,
	PRIMARY KEY (compressor_id)
);
GO

CREATE TABLE lstm_source_day_counts (
	compressor_id NVARCHAR(64) NOT NULL,
	day_start DATETIME2 NOT NULL,
	row_count INTEGER NOT NULL,
	counted_through DATETIME2 NOT NULL,
	PRIMARY KEY (compressor_id, day_start)
);
GO

CREATE TABLE alert_episodes (
	id BIGINT NOT NULL IDENTITY,
	compressor_id NVARCHAR(64) NOT NULL,
	model_version NVARCHAR(40) NOT NULL,
	start_time DATETIME2 NOT NULL,
	end_time DATETIME2 NULL,
	peak_score FLOAT(53) NOT NULL,
	peak_at DATETIME2 NOT NULL,
	threshold FLOAT(53) NOT NULL,
	top_features NVARCHAR(200) NULL,
	state NVARCHAR(16) NOT NULL,
	acknowledged_by NVARCHAR(100) NULL,
	acknowledged_at DATETIME2 NULL,
	closed_by NVARCHAR(100) NULL,
	closed_at DATETIME2 NULL,
	note NVARCHAR(1000) NULL,
	created_at DATETIME2 NOT NULL,
	updated_at DATETIME2 NOT NULL,
	PRIMARY KEY (id),
	CONSTRAINT uq_episode_start UNIQUE (compressor_id, model_version, start_time)
);
GO
CREATE INDEX ix_episodes_state ON alert_episodes (state, start_time);
GO

CREATE TABLE maintenance_windows (
	id BIGINT NOT NULL IDENTITY,
	compressor_id NVARCHAR(64) NOT NULL,
	starts_at DATETIME2 NOT NULL,
	ends_at DATETIME2 NOT NULL,
	reason NVARCHAR(1000) NOT NULL,
	created_at DATETIME2 NOT NULL,
	PRIMARY KEY (id)
);
GO
CREATE INDEX ix_maintenance_compressor_time ON maintenance_windows (compressor_id, starts_at);
GO

CREATE TABLE alert_notifications (
	id BIGINT NOT NULL IDENTITY,
	idempotency_key NVARCHAR(64) NOT NULL,
	channel NVARCHAR(16) NOT NULL,
	kind NVARCHAR(16) NOT NULL,
	compressor_id NVARCHAR(64) NOT NULL,
	episode_start DATETIME2 NOT NULL,
	model_version NVARCHAR(40) NOT NULL,
	payload NVARCHAR(4000) NOT NULL,
	status NVARCHAR(16) NOT NULL,
	attempts INTEGER NOT NULL,
	next_attempt_at DATETIME2 NOT NULL,
	claimed_until DATETIME2 NULL,
	last_error NVARCHAR(1000) NULL,
	created_at DATETIME2 NOT NULL,
	sent_at DATETIME2 NULL,
	PRIMARY KEY (id),
	CONSTRAINT uq_notification_key UNIQUE (idempotency_key, channel)
);
GO
CREATE INDEX ix_notifications_status ON alert_notifications (status, next_attempt_at);
GO
