-- device_gender training rows: every device first seen before the run date, one row each,
-- with the features the model sees. Labels come from Aurora (ml_labels), never from here.
-- Keep the feature list identical to scoring.sql (a unit test compares the two).
{%- set countries = ['us', 'gb', 'de', 'fr', 'br', 'in', 'jp', 'mx'] %}
SELECT
    d.device_id,
    DATEDIFF(day, d.first_seen, {{ ds | sqldate }}) AS device_age_days,
    CASE WHEN d.os = 'ios' THEN 1 ELSE 0 END AS is_ios,
{%- for c in countries %}
    CASE WHEN d.country = {{ c | upper | sqlstr }} THEN 1 ELSE 0 END AS country_{{ c }},
{%- endfor %}
    d.device_price_usd,
    d.sessions_30d,
    d.minutes_30d,
    d.active_days_30d,
    d.avg_session_sec,
    d.night_share,
    d.weekend_share,
    d.notif_open_rate,
    d.battery_saver,
    d.dark_mode,
    d.font_scale,
    d.apps_installed,
    d.apps_uninstalled_30d,
    d.data_mb_30d,
    d.wifi_share,
    d.screen_brightness_avg,
    d.charging_sessions_30d,
    d.share_games,
    d.share_beauty,
    d.share_sports,
    d.share_shopping,
    d.share_finance,
    d.share_news,
    d.share_social,
    d.share_video,
    d.share_music,
    d.share_health,
    d.share_travel,
    d.share_education,
    d.share_other
FROM analytics.devices AS d
WHERE d.first_seen < {{ ds | sqldate }}
