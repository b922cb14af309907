@echo off
rem One scoring run, started by Task Scheduler (see register_task.ps1).
rem Secrets: set COMPRESSOR_AD_DB_URL and COMPRESSOR_AD_DB_PASSWORD_FILE as machine environment
rem variables, the password file readable by the task's account only.
cd /d "%~dp0\..\.."
".venv\Scripts\python.exe" run_scheduler.py --log-format json --log-file var\log\scheduler.log run --once
exit /b %ERRORLEVEL%
