-- recipe_category training rows: every recipe created before the run date, one row each, with
-- the features the model sees (the title is the text the model reads; the numbers help it).
-- Labels come from Aurora (ml_labels), never from here. Keep the feature list identical to
-- scoring.sql (a unit test compares the two).
SELECT
    r.recipe_id,
    r.title,
    r.n_ingredients,
    r.prep_minutes,
    r.calories
FROM analytics.recipes AS r
WHERE r.created_at < {{ ds | sqldate }}
