-- anomaly_events: one row per alarm EVENT, from lstm_predictions_detailed (SQL Server 2016 SP1+ / Azure SQL).
--
-- An event is a run of consecutive anomalous windows (is_anomaly) of one compressor and one
-- model version that contains at least one triggered window (the run reached the configured
-- number of consecutive windows). A run ends at a normal window, and also at a data gap: there
-- the pipeline restarts consecutive_count at 1. Gaps and islands: every row that starts a run
-- is marked, a running sum of the marks numbers the runs, and the anomalous rows are grouped
-- by that number.
--
-- Columns: compressor_id, model_version, start_time and end_time (window_end of the first and
-- last anomalous window), duration_s (end_time - start_time, seconds), windows (anomalous
-- windows in the event), peak_score (highest score), top_signals (top contributing signals of
-- the peak window).
--
-- Example: SELECT * FROM anomaly_events WHERE compressor_id = 'C01' AND start_time >= '2026-01-01'
--          ORDER BY start_time;

CREATE OR ALTER VIEW anomaly_events AS
WITH marked AS (
    SELECT
        compressor_id, model_version, window_end, score, is_anomaly, triggered, top_features,
        CASE
            WHEN is_anomaly = 1 AND consecutive_count > 1
                 AND LAG(is_anomaly) OVER (PARTITION BY compressor_id, model_version ORDER BY window_end) = 1
            THEN 0 ELSE 1
        END AS run_start
    FROM lstm_predictions_detailed
),
numbered AS (
    SELECT
        compressor_id, model_version, window_end, score, is_anomaly, triggered, top_features,
        SUM(run_start) OVER (
            PARTITION BY compressor_id, model_version ORDER BY window_end ROWS UNBOUNDED PRECEDING
        ) AS run_id
    FROM marked
),
anomalous AS (
    SELECT
        compressor_id, model_version, window_end, score, triggered, top_features, run_id,
        ROW_NUMBER() OVER (
            PARTITION BY compressor_id, model_version, run_id ORDER BY score DESC, window_end
        ) AS peak_rank
    FROM numbered
    WHERE is_anomaly = 1
)
SELECT
    compressor_id,
    model_version,
    MIN(window_end) AS start_time,
    MAX(window_end) AS end_time,
    DATEDIFF_BIG(MILLISECOND, MIN(window_end), MAX(window_end)) / 1000.0 AS duration_s,
    COUNT(*) AS windows,
    MAX(score) AS peak_score,
    MAX(CASE WHEN peak_rank = 1 THEN top_features END) AS top_signals
FROM anomalous
GROUP BY compressor_id, model_version, run_id
HAVING MAX(CASE WHEN triggered = 1 THEN 1 ELSE 0 END) = 1;
GO
