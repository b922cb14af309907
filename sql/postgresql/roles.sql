-- Least-privilege roles for compressor anomaly detection (PostgreSQL).
-- Run as the owner of the tables, in their database, after schema.sql and views.sql.
--
-- compressor_ad_scheduler  reads the source table; writes the result tables and nothing else
--                          (no DDL: the tables exist, so the scheduler creates none).
-- compressor_ad_analyst    reads the result tables and the anomaly_events view.
--
-- Give the roles to login users; the password is set by an administrator, never in a file
-- under version control (the scheduler reads it from COMPRESSOR_AD_DB_PASSWORD_FILE):
--   CREATE ROLE scheduler_svc LOGIN IN ROLE compressor_ad_scheduler;
--   \password scheduler_svc
--   CREATE ROLE jane LOGIN IN ROLE compressor_ad_analyst;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'compressor_ad_scheduler') THEN
        CREATE ROLE compressor_ad_scheduler NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'compressor_ad_analyst') THEN
        CREATE ROLE compressor_ad_analyst NOLOGIN;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO compressor_ad_scheduler, compressor_ad_analyst;

GRANT SELECT ON compressor_telemetry TO compressor_ad_scheduler;
GRANT SELECT, INSERT, DELETE ON lstm_predictions_detailed, anomaly_detection_results TO compressor_ad_scheduler;
GRANT SELECT, INSERT ON lstm_batch_summary TO compressor_ad_scheduler;
GRANT SELECT, INSERT, UPDATE ON lstm_scheduler_checkpoint TO compressor_ad_scheduler;
GRANT SELECT, INSERT, DELETE ON lstm_source_day_counts TO compressor_ad_scheduler;
GRANT SELECT, INSERT, UPDATE, DELETE ON alert_episodes TO compressor_ad_scheduler;
GRANT SELECT, INSERT, UPDATE, DELETE ON alert_notifications TO compressor_ad_scheduler;
GRANT SELECT, INSERT, DELETE ON maintenance_windows TO compressor_ad_scheduler;
GRANT USAGE ON SEQUENCE alert_episodes_id_seq, alert_notifications_id_seq, maintenance_windows_id_seq TO compressor_ad_scheduler;
GRANT USAGE ON SEQUENCE lstm_predictions_detailed_id_seq, anomaly_detection_results_id_seq, lstm_batch_summary_id_seq
    TO compressor_ad_scheduler;

GRANT SELECT ON lstm_predictions_detailed, anomaly_detection_results, lstm_batch_summary, lstm_scheduler_checkpoint,
    lstm_source_day_counts, anomaly_events, alert_episodes, alert_notifications, maintenance_windows TO compressor_ad_analyst;
