-- recipe_category scoring rows: recipes created or edited within params.lookback_days days
-- before the end of the run date (a new title may mean a new category), with exactly the
-- features of training.sql.
SELECT
    r.recipe_id,
    r.title,
    r.n_ingredients,
    r.prep_minutes,
    r.calories
FROM analytics.recipes AS r
WHERE r.created_at < DATEADD(day, 1, {{ ds | sqldate }})
  AND (
      r.created_at >= DATEADD(day, -{{ params.lookback_days | sqlnum }}, {{ ds | sqldate }})
      OR r.updated_at >= DATEADD(day, -{{ params.lookback_days | sqlnum }}, {{ ds | sqldate }})
  )
