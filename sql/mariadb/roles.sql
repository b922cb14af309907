-- Least-privilege roles for compressor anomaly detection (MariaDB 10.5+).
-- Run as an administrator with the tables' database selected (USE <database>), after schema.sql
-- and views.sql. Table names without a database refer to the selected one.
--
-- compressor_ad_scheduler  reads the source table; writes the result tables and nothing else
--                          (no DDL: the tables exist, so the scheduler creates none).
-- compressor_ad_analyst    reads the result tables and the anomaly_events view.
--
-- Give the roles to users; the password is set by an administrator, never in a file under
-- version control (the scheduler reads it from COMPRESSOR_AD_DB_PASSWORD_FILE):
--   CREATE USER 'scheduler_svc'@'%' IDENTIFIED BY '...';
--   GRANT compressor_ad_scheduler TO 'scheduler_svc'@'%';
--   SET DEFAULT ROLE compressor_ad_scheduler FOR 'scheduler_svc'@'%';

CREATE ROLE IF NOT EXISTS compressor_ad_scheduler;
CREATE ROLE IF NOT EXISTS compressor_ad_analyst;

GRANT SELECT ON compressor_telemetry TO compressor_ad_scheduler;
GRANT SELECT, INSERT, DELETE ON lstm_predictions_detailed TO compressor_ad_scheduler;
GRANT SELECT, INSERT, DELETE ON anomaly_detection_results TO compressor_ad_scheduler;
GRANT SELECT, INSERT ON lstm_batch_summary TO compressor_ad_scheduler;
GRANT SELECT, INSERT, UPDATE ON lstm_scheduler_checkpoint TO compressor_ad_scheduler;
GRANT SELECT, INSERT, DELETE ON lstm_source_day_counts TO compressor_ad_scheduler;
GRANT SELECT, INSERT, UPDATE, DELETE ON alert_episodes TO compressor_ad_scheduler;
GRANT SELECT, INSERT, UPDATE, DELETE ON alert_notifications TO compressor_ad_scheduler;
GRANT SELECT, INSERT, DELETE ON maintenance_windows TO compressor_ad_scheduler;

GRANT SELECT ON lstm_predictions_detailed TO compressor_ad_analyst;
GRANT SELECT ON anomaly_detection_results TO compressor_ad_analyst;
GRANT SELECT ON lstm_batch_summary TO compressor_ad_analyst;
GRANT SELECT ON lstm_scheduler_checkpoint TO compressor_ad_analyst;
GRANT SELECT ON lstm_source_day_counts TO compressor_ad_analyst;
GRANT SELECT ON anomaly_events TO compressor_ad_analyst;
GRANT SELECT ON alert_episodes TO compressor_ad_analyst;
GRANT SELECT ON alert_notifications TO compressor_ad_analyst;
GRANT SELECT ON maintenance_windows TO compressor_ad_analyst;
