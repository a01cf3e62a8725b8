"""Small fine-tuning tasks of different shapes, generated deterministically, for bench/auto_bench.py.

Every task is written by ``write_tasks(out)`` as ``out/<task>/train.jsonl`` and ``test.jsonl`` from a fixed
seed, so two runs of the benchmark train on the very same rows. The shapes:

- labels: topic of a headline, 4 one-word labels (240 train / 60 test rows);
- short_text: a date in ISO form written in words, "2021-03-04" -> "4 March 2021" (200 / 60);
- long_text: a three-sentence product description from its attributes, about 45 tokens (160 / 40);
- chat: a multi-turn pizza order (system, user, assistant, user, assistant); the last turn is scored (160 / 40);
- tiny: which continent a country is in, 50 training rows, 5 labels (50 / 19);
- demo: the bundled customer-intent task (``tuneforge demo``'s data; 360 rows, split by the run as finetune does).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Callable

SEED = 1234

TOPICS: dict[str, tuple[list[str], list[str]]] = {
    "sports": (["Striker", "Coach", "Goalkeeper", "Captain", "Rookie", "Veteran sprinter"],
               ["scores twice in the cup final", "signs a new contract with the club", "breaks the national record",
                "is injured before the derby", "leads the team to the title", "wins the marathon in the rain"]),
    "weather": (["Storm", "Heat wave", "Heavy snow", "Thick fog", "Frost", "Flooding"],
                ["closes roads in the north", "is expected this weekend", "delays flights at the airport",
                 "breaks a temperature record", "warnings issued for the coast", "hits farms across the valley"]),
    "food": (["Bakery", "New restaurant", "Street market", "Chef", "Cheese maker", "Family cafe"],
             ["wins a prize for its sourdough", "opens a vegan menu", "shares a recipe for soup",
              "brings back the spicy noodles", "is famous for its apple pie", "serves fresh fish daily"]),
    "tech": (["Startup", "Phone maker", "Chip company", "Software team", "Robot lab", "App developer"],
             ["releases a faster laptop", "fixes a security bug", "launches a new operating system",
              "unveils a folding screen", "raises money for its AI tool", "updates its cloud service"]),
}
PLACES = ["in Oslo", "in Lima", "downtown", "this morning", "after a long week", "on Monday", "again", "at last"]

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]

PRODUCTS = ["lamp", "chair", "desk", "kettle", "backpack", "clock", "mug", "shelf"]
NAMES = ["Orion", "Lumen", "Atlas", "Nova", "Pico", "Terra", "Vega", "Echo", "Zephyr", "Maple", "Cobalt", "Iris"]
COLORS = ["blue", "red", "green", "black", "white", "yellow", "grey"]
MATERIALS = ["oak", "steel", "bamboo", "glass", "wool", "ceramic"]

SIZES = {"small": 8, "medium": 11, "large": 14}
TOPPINGS = {"cheese": 0, "mushrooms": 1, "ham": 2, "olives": 1, "pepperoni": 2, "spinach": 1, "onions": 1}
PIZZA_SYSTEM = "You are the ordering assistant of Tony's Pizza. Be brief."

CONTINENTS = {
    "Europe": ["France", "Germany", "Spain", "Italy", "Poland", "Sweden", "Norway", "Greece", "Portugal", "Austria",
               "Hungary", "Ireland", "Finland", "Denmark", "Belgium"],
    "Asia": ["Japan", "China", "India", "Thailand", "Vietnam", "Nepal", "Mongolia", "Indonesia", "Pakistan",
             "Malaysia", "Cambodia", "Laos", "Bhutan", "Philippines", "Korea"],
    "Africa": ["Kenya", "Nigeria", "Egypt", "Ghana", "Ethiopia", "Morocco", "Senegal", "Uganda", "Zambia", "Angola",
               "Mali", "Tanzania", "Namibia", "Botswana", "Tunisia"],
    "America": ["Brazil", "Canada", "Mexico", "Peru", "Chile", "Argentina", "Colombia", "Cuba", "Bolivia",
                "Ecuador", "Panama", "Uruguay", "Jamaica", "Venezuela", "Paraguay"],
    "Oceania": ["Australia", "Fiji", "Samoa", "Tonga", "Vanuatu", "Palau", "Kiribati", "Tuvalu", "Nauru"],
}


def _labels(rng: random.Random, n: int) -> list[dict[str, Any]]:
    rows = []
    for _ in range(n):
        topic = rng.choice(sorted(TOPICS))
        subjects, actions = TOPICS[topic]
        rows.append({"instruction": "Which topic is this headline about? Answer with one word: sports, weather, food or tech.",
                     "input": f"{rng.choice(subjects)} {rng.choice(actions)} {rng.choice(PLACES)}", "output": topic})
    return rows


def _short_text(rng: random.Random, n: int) -> list[dict[str, Any]]:
    rows = []
    for _ in range(n):
        year, month, day = rng.randint(1950, 2030), rng.randint(1, 12), rng.randint(1, 28)
        rows.append({"instruction": "Write this date in words as day, month name and year.",
                     "input": f"{year:04d}-{month:02d}-{day:02d}", "output": f"{day} {MONTHS[month - 1]} {year}"})
    return rows


def _long_text(rng: random.Random, n: int) -> list[dict[str, Any]]:
    rows = []
    for _ in range(n):
        product, name, color = rng.choice(PRODUCTS), rng.choice(NAMES), rng.choice(COLORS)
        material, price, days = rng.choice(MATERIALS), rng.randint(10, 200), rng.randint(1, 5)
        output = (f"The {name} {product} is a {color} {product} made of {material}. It costs {price} dollars and ships "
                  f"within {days} day{'s' if days > 1 else ''}. Its {material} body is finished by hand, and the {color} "
                  f"colour suits any room.")
        rows.append({"instruction": "Write a short product description from these attributes.",
                     "input": f"name: {name}; product: {product}; color: {color}; material: {material}; "
                              f"price: {price}; shipping days: {days}", "output": output})
    return rows


def _chat(rng: random.Random, n: int) -> list[dict[str, Any]]:
    rows = []
    for _ in range(n):
        size, topping = rng.choice(sorted(SIZES)), rng.choice(sorted(TOPPINGS))
        price = SIZES[size] + TOPPINGS[topping]
        rows.append({"messages": [
            {"role": "system", "content": PIZZA_SYSTEM},
            {"role": "user", "content": rng.choice(["Hi, I want to order a pizza.", "Hello! One pizza please.",
                                                    "Can I get a pizza?", "I'd like to order."])},
            {"role": "assistant", "content": "Sure. Which size would you like: small, medium or large?"},
            {"role": "user", "content": rng.choice([f"{size}, with {topping}.", f"A {size} one with {topping}, please.",
                                                    f"Make it {size} and add {topping}."])},
            {"role": "assistant", "content": f"One {size} pizza with {topping}. That is {price} dollars."},
        ]})
    return rows


def _tiny(rng: random.Random) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    pairs = [(country, continent) for continent, countries in CONTINENTS.items() for country in countries]
    rng.shuffle(pairs)
    rows = [{"instruction": "Which continent is this country in? Answer with one word: Europe, Asia, Africa, America "
                            "or Oceania.", "input": country, "output": continent} for country, continent in pairs]
    return rows[:50], rows[50:]


def _split(make: Callable[[random.Random, int], list[dict[str, Any]]], train: int, test: int, seed: int
           ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``train`` + ``test`` generated rows; test rows whose input is also a training input are regenerated away."""
    rng = random.Random(seed)
    rows = make(rng, train)
    seen = {json.dumps(row, sort_keys=True) for row in rows}
    held: list[dict[str, Any]] = []
    while len(held) < test:
        for row in make(rng, test):
            key = json.dumps(row, sort_keys=True)
            if key not in seen and len(held) < test:
                seen.add(key)
                held.append(row)
    return rows, held


def task_rows() -> dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """task name -> (train rows, test rows); the same every call."""
    return {
        "labels": _split(_labels, 240, 60, SEED),
        "short_text": _split(_short_text, 200, 60, SEED + 1),
        "long_text": _split(_long_text, 160, 40, SEED + 2),
        "chat": _split(_chat, 160, 40, SEED + 3),
        "tiny": _tiny(random.Random(SEED + 4)),
    }


def write_tasks(out: Path) -> dict[str, dict[str, str]]:
    """Write every generated task under ``out``; return task -> {"data": path, "test_data": path}."""
    paths = {}
    for name, (train, test) in task_rows().items():
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for split, rows in (("train", train), ("test", test)):
            (folder / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        paths[name] = {"data": str(folder / "train.jsonl"), "test_data": str(folder / "test.jsonl")}
    return paths
