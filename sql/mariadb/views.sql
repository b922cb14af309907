-- anomaly_events: one row per alert EPISODE, from lstm_predictions_detailed (MariaDB / MySQL 8).
--
-- An event is an alert episode (models/alarms.py): the windows of one compressor and one model
-- version in which the alarm rule's episode is open (in_alert), from the window where it opened
-- until it closed after the quiet period; normal windows inside an episode belong to it, and a
-- data gap does not end it. Gaps and islands: every row that starts a run of in_alert rows is
-- marked, a running sum of the marks numbers the runs, and the in_alert rows are grouped by that
-- number. Rows written before in_alert existed (NULL) are in no event until a backfill rescores them.
--
-- Columns: compressor_id, model_version, start_time and end_time (window_end of the first and
-- last window of the episode), duration_s (end_time - start_time, seconds), windows (windows in
-- the episode), peak_score (highest score), top_signals (top contributing signals of
-- the peak window).
--
-- Example: SELECT * FROM anomaly_events WHERE compressor_id = 'C01' AND start_time >= '2026-01-01'
--          ORDER BY start_time;

CREATE OR REPLACE VIEW anomaly_events AS
WITH marked AS (
    SELECT
        compressor_id, model_version, window_end, score, in_alert, top_features,
        CASE
            WHEN in_alert = 1
                 AND LAG(in_alert) OVER (PARTITION BY compressor_id, model_version ORDER BY window_end) = 1
            THEN 0 ELSE 1
        END AS run_start
    FROM lstm_predictions_detailed
),
numbered AS (
    SELECT
        compressor_id, model_version, window_end, score, in_alert, top_features,
        SUM(run_start) OVER (
            PARTITION BY compressor_id, model_version ORDER BY window_end ROWS UNBOUNDED PRECEDING
        ) AS run_id
    FROM marked
),
episode_rows AS (
    SELECT
        compressor_id, model_version, window_end, score, top_features, run_id,
        ROW_NUMBER() OVER (
            PARTITION BY compressor_id, model_version, run_id ORDER BY score DESC, window_end
        ) AS peak_rank
    FROM numbered
    WHERE in_alert = 1
)
SELECT
    compressor_id,
    model_version,
    MIN(window_end) AS start_time,
    MAX(window_end) AS end_time,
    TIMESTAMPDIFF(MICROSECOND, MIN(window_end), MAX(window_end)) / 1000000.0 AS duration_s,
    COUNT(*) AS windows,
    MAX(score) AS peak_score,
    MAX(CASE WHEN peak_rank = 1 THEN top_features END) AS top_signals
FROM episode_rows
GROUP BY compressor_id, model_version, run_id;
