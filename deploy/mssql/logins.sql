-- Logins of the Compose stack, run by init.sh with sqlcmd variables scheduler_pw and grafana_pw.
-- scheduler_svc: the scheduler daemon and the API (role compressor_ad_scheduler, sql/mssql/roles.sql)
-- grafana_reader: the dashboards (role compressor_ad_analyst: read-only)
IF SUSER_ID('scheduler_svc') IS NULL
    CREATE LOGIN scheduler_svc WITH PASSWORD = '$(scheduler_pw)'
ELSE
    ALTER LOGIN scheduler_svc WITH PASSWORD = '$(scheduler_pw)'
IF SUSER_ID('grafana_reader') IS NULL
    CREATE LOGIN grafana_reader WITH PASSWORD = '$(grafana_pw)'
ELSE
    ALTER LOGIN grafana_reader WITH PASSWORD = '$(grafana_pw)'
GO
IF DATABASE_PRINCIPAL_ID('scheduler_svc') IS NULL
    CREATE USER scheduler_svc FOR LOGIN scheduler_svc
IF DATABASE_PRINCIPAL_ID('grafana_reader') IS NULL
    CREATE USER grafana_reader FOR LOGIN grafana_reader
GO
ALTER ROLE compressor_ad_scheduler ADD MEMBER scheduler_svc;
ALTER ROLE compressor_ad_analyst ADD MEMBER grafana_reader;
GO
