# Registers the Task Scheduler task that starts deploy\windows\run_once.cmd every N minutes.
# Run in an elevated PowerShell from the installation folder, e.g.
#   powershell -ExecutionPolicy Bypass -File deploy\windows\register_task.ps1 -Account "DOMAIN\svc-compressor-ad"
# Task Scheduler does not start a second instance while one still runs.
param(
    [string]$TaskName = "CompressorAnomalyDetection",
    [int]$EveryMinutes = 15,
    [string]$Account = "NT AUTHORITY\NETWORK SERVICE"
)
$ErrorActionPreference = "Stop"
$runner = Join-Path $PSScriptRoot "run_once.cmd"
if (-not (Test-Path $runner)) { throw "not found: $runner" }

# /RP * prompts for the account's password (not needed for the built-in service accounts).
$password = @()
if ($Account -notlike "NT AUTHORITY\*") { $password = @("/RP", "*") }
schtasks /Create /F /TN $TaskName /TR "`"$runner`"" /SC MINUTE /MO $EveryMinutes /RU $Account @password /RL LIMITED
if ($LASTEXITCODE -ne 0) { throw "schtasks failed with exit code $LASTEXITCODE" }
Write-Output "registered ${TaskName}: every $EveryMinutes minutes as $Account -> $runner"
