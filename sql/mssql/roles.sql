-- Least-privilege roles for compressor anomaly detection (SQL Server / Azure SQL).
-- Run as the database owner in the tables' database, after schema.sql and views.sql.
--
-- compressor_ad_scheduler  reads the source table; writes the result tables and nothing else
--                          (no DDL: the tables exist, so the scheduler creates none).
-- compressor_ad_analyst    reads the result tables and the anomaly_events view.
--
-- Give the roles to users; the password is set by an administrator, never in a file under
-- version control (the scheduler reads it from COMPRESSOR_AD_DB_PASSWORD_FILE):
--   SQL Server:  CREATE LOGIN scheduler_svc WITH PASSWORD = '...';
--                CREATE USER scheduler_svc FOR LOGIN scheduler_svc;
--   Azure SQL:   CREATE USER scheduler_svc WITH PASSWORD = '...';   -- contained user
--                or CREATE USER [scheduler-app] FROM EXTERNAL PROVIDER;  -- Entra ID identity
--   then:        ALTER ROLE compressor_ad_scheduler ADD MEMBER scheduler_svc;

IF DATABASE_PRINCIPAL_ID('compressor_ad_scheduler') IS NULL CREATE ROLE compressor_ad_scheduler;
IF DATABASE_PRINCIPAL_ID('compressor_ad_analyst') IS NULL CREATE ROLE compressor_ad_analyst;
GO

GRANT SELECT ON dbo.compressor_telemetry TO compressor_ad_scheduler;
GRANT SELECT, INSERT, DELETE ON dbo.lstm_predictions_detailed TO compressor_ad_scheduler;
GRANT SELECT, INSERT, DELETE ON dbo.anomaly_detection_results TO compressor_ad_scheduler;
GRANT SELECT, INSERT ON dbo.lstm_batch_summary TO compressor_ad_scheduler;
GRANT SELECT, INSERT, UPDATE ON dbo.lstm_scheduler_checkpoint TO compressor_ad_scheduler;
GRANT SELECT, INSERT, DELETE ON dbo.lstm_source_day_counts TO compressor_ad_scheduler;
GRANT SELECT, INSERT, UPDATE, DELETE ON dbo.alert_episodes TO compressor_ad_scheduler;
GRANT SELECT, INSERT, UPDATE, DELETE ON dbo.alert_notifications TO compressor_ad_scheduler;
GRANT SELECT, INSERT, DELETE ON dbo.maintenance_windows TO compressor_ad_scheduler;

GRANT SELECT ON dbo.lstm_predictions_detailed TO compressor_ad_analyst;
GRANT SELECT ON dbo.anomaly_detection_results TO compressor_ad_analyst;
GRANT SELECT ON dbo.lstm_batch_summary TO compressor_ad_analyst;
GRANT SELECT ON dbo.lstm_scheduler_checkpoint TO compressor_ad_analyst;
GRANT SELECT ON dbo.lstm_source_day_counts TO compressor_ad_analyst;
GRANT SELECT ON dbo.anomaly_events TO compressor_ad_analyst;
GRANT SELECT ON dbo.alert_episodes TO compressor_ad_analyst;
GRANT SELECT ON dbo.alert_notifications TO compressor_ad_analyst;
GRANT SELECT ON dbo.maintenance_windows TO compressor_ad_analyst;
GO
