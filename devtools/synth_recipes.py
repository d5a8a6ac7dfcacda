"""The synthetic recipes of the example model ``recipe_category``: ``analytics.recipes`` (a
title, a few numbers, timestamps) and their hidden category, from their own random stream.
:mod:`devtools.synth` writes them into the warehouse with the devices.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pyarrow as pa

# Titles are built from per-class vocabularies that share words (lemon, garlic, chocolate,
# matcha, coconut, honey...), with class-free filler ("easy", "vegan", "grandma's") and noise:
# some titles lose their dish word, some borrow another class's, and a few recipes are truly
# ambiguous (their category is not the one the title was drawn from). Numbers carry a weaker
# signal of their own (desserts are rich, drinks have few ingredients, mains take longest).
# A hashed-bigram text model reaches ~0.9 accuracy; a title-only bag of words a little less.
RECIPE_CLASSES = ("main", "side", "dessert", "drink", "other")
_RECIPE_CLASS_P = (0.34, 0.2, 0.2, 0.15, 0.11)
_RECIPE_MODIFIERS = {
    "main": "creamy spicy garlic lemon herb grilled roasted baked crispy honey smoky teriyaki cajun sesame "
    "slow-cooker one-pot sheet-pan stuffed braised butter",
    "side": "roasted garlic buttery crispy honey-glazed lemon herb creamy charred steamed sauteed "
    "parmesan balsamic smashed maple",
    "dessert": "chocolate vanilla salted-caramel lemon strawberry peanut-butter cinnamon coconut matcha "
    "raspberry blueberry pumpkin molten no-bake honey",
    "drink": "iced hot frozen sparkling spiced fresh matcha strawberry mango coconut lemon ginger "
    "chocolate vanilla mint peach",
    "other": "homemade easy spicy garlic lemon herb honey smoky creamy tangy sweet roasted-pepper chipotle",
}
_RECIPE_CORES = {
    "main": "chicken beef pork salmon shrimp tofu turkey lamb chickpea meatball sausage cod mushroom",
    "side": "potatoes carrots broccoli green-beans asparagus brussels-sprouts corn rice quinoa cauliflower "
    "sweet-potato zucchini",
    "dessert": "banana apple cherry oatmeal cream-cheese almond mocha pecan",
    "drink": "tea coffee berry citrus watermelon pineapple oat-milk",
    "other": "tomato avocado yogurt mustard cilantro basil jalapeno cranberry",
}
_RECIPE_DISHES = {
    "main": "pasta curry stir-fry tacos burger casserole stew lasagna risotto skewers bowl pot-pie sandwich "
    "fried-rice enchiladas chili",
    "side": "salad mash fries gratin pilaf slaw wedges medley bake fritters",
    "dessert": "cake lava-cake cookies brownies pie cheesecake tart pudding ice-cream muffins cupcakes "
    "macarons crumble fudge",
    "drink": "latte smoothie lemonade tea punch mocktail milkshake cocktail spritzer cold-brew cooler",
    "other": "sauce salsa pesto vinaigrette hummus granola spice-rub pickles jam marinade gravy dip croutons dressing",
}
_RECIPE_FILLER = "easy quick best homemade healthy vegan gluten-free 30-minute keto classic grandma's simple weeknight"
_RECIPE_NUMBERS = {  # n_ingredients (poisson mean), prep minutes (lognormal median), calories (median)
    "main": (11, 45, 560),
    "side": (7, 25, 210),
    "dessert": (9, 50, 420),
    "drink": (4, 6, 180),
    "other": (6, 15, 120),
}
FIRST_RECIPE_ID = 1
RECIPE_TRUTH_TABLE = "analytics._truth_recipe_category"
RECIPE_LABEL_HEADER = ("recipe_id", "category", "labelled_by", "note", "status")
_RECIPE_SEED_OFFSET = 1_000_003  # the recipes' own RNG stream: device tables never change with them


def _words(spec: str) -> np.ndarray:
    return np.array([w.replace("-", " ") for w in spec.split()])


def _recipe_titles(rng: np.random.Generator, source: np.ndarray) -> list[str]:
    n = len(source)
    mods = {c: _words(v) for c, v in _RECIPE_MODIFIERS.items()}
    cores = {c: _words(v) for c, v in _RECIPE_CORES.items()}
    dishes = {c: _words(v) for c, v in _RECIPE_DISHES.items()}
    filler = _words(_RECIPE_FILLER)
    all_mods = np.concatenate(list(mods.values()))
    n_mods = rng.choice(3, n, p=(0.2, 0.55, 0.25))
    u = rng.random((n, 6))
    pick = rng.integers(0, 1 << 30, (n, 6))
    titles = []
    for i in range(n):
        c = RECIPE_CLASSES[source[i]]
        words: list[str] = []
        if u[i, 0] < 0.3:
            words.append(filler[pick[i, 0] % len(filler)])
        for k in range(n_mods[i]):
            pool = mods[c] if u[i, 1 + k] < 0.75 else all_mods  # a quarter of modifiers from anywhere
            words.append(pool[pick[i, 1 + k] % len(pool)])
        if u[i, 3] < 0.5:
            words.append(cores[c][pick[i, 3] % len(cores[c])])
        if u[i, 4] < 0.9:  # the dish word, usually; sometimes another class's
            other = RECIPE_CLASSES[pick[i, 4] % len(RECIPE_CLASSES)] if u[i, 5] < 0.08 else c
            words.append(dishes[other][pick[i, 5] % len(dishes[other])])
        elif not words:
            words.append(cores[c][pick[i, 3] % len(cores[c])])
        titles.append(" ".join(dict.fromkeys(words)))  # no word twice
    return titles


def _recipes(rng: np.random.Generator, n: int, ref_date: date) -> tuple[pa.Table, pa.Table]:
    source = rng.choice(len(RECIPE_CLASSES), n, p=_RECIPE_CLASS_P)
    titles = _recipe_titles(rng, source)
    # ~5% genuinely ambiguous: the category is not the one the title was drawn from
    ambiguous = rng.random(n) < 0.05
    truth = np.where(ambiguous, rng.integers(0, len(RECIPE_CLASSES), n), source)
    params = np.array([_RECIPE_NUMBERS[c] for c in RECIPE_CLASSES], dtype=float)[source]
    n_ingredients = np.maximum(1, rng.poisson(params[:, 0]))
    prep = np.maximum(1, np.rint(rng.lognormal(np.log(params[:, 1]), 0.6))).astype(np.int64)
    calories = np.rint(rng.lognormal(np.log(params[:, 2]), 0.45)).astype(np.int64)
    ref = np.datetime64(ref_date, "s") + np.timedelta64(0, "s")
    created = ref - rng.integers(0, 1000 * 86_400, n).astype("timedelta64[s]")
    age = (ref - created).astype(np.int64)
    # A quarter were edited in the last 30 days (never before they were created); the rest not since.
    recent = rng.random(n) < 0.25
    edit_age = np.where(recent, rng.integers(0, 30 * 86_400, n), age)
    updated = ref - np.minimum(edit_age, age).astype("timedelta64[s]")
    ids = FIRST_RECIPE_ID + np.arange(n, dtype=np.int64)
    title_mask = rng.random(n) < 0.003  # a few recipes without a title yet
    calories_mask = rng.random(n) < 0.02
    recipes = pa.table(
        {
            "recipe_id": ids,
            "title": pa.array(titles, pa.string(), mask=title_mask),
            "n_ingredients": pa.array(n_ingredients.astype(np.int32)),
            "prep_minutes": pa.array(prep.astype(np.int32)),
            "calories": pa.array(calories.astype(np.int32), mask=calories_mask),
            "created_at": pa.array(created, pa.timestamp("s")),
            "updated_at": pa.array(updated, pa.timestamp("s")),
        }
    )
    truth_table = pa.table({"recipe_id": ids, "category": np.array(RECIPE_CLASSES)[truth]})
    return recipes, truth_table
