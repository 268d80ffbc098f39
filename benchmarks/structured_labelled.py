"""The labelled task set of the structured-output benchmark: tasks whose right answers are known.

Thirty-six (prompt, Pydantic model, expected values) triples in three classes of twelve:

* ``extraction``: copy facts out of a given text (names, numbers, dates as written);
* ``classification``: put a given text into one of the closed vocabularies its model names
  (a `StrEnum` or a `Literal`), with one extracted field beside it;
* ``arithmetic``: a sum, difference, product or quotient whose operands the prompt states.

Each expected value is unambiguous from the prompt alone; `benchmarks.structured_scoring`
compares them field by field. As in `benchmarks.structured_tasks`, every prompt is what a
developer would write, and every approach gets exactly this prompt.

Only pydantic and the standard library are imported, so the module loads both in the
project's venv and in the separate instructor venv (see `benchmarks/venvs.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

from benchmarks.structured_tasks import Priority, Sentiment, Task

LABELLED_CLASSES = ("extraction", "classification", "arithmetic")


@dataclass(frozen=True, slots=True)
class LabelledTask(Task):
    """A task and the values a right answer holds, by field name (a tuple: alternatives)."""

    expected: dict[str, Any]


# ── extraction ──────────────────────────────────────────────────────────────


class Person(BaseModel):
    name: str
    age: int
    city: str


class Book(BaseModel):
    title: str
    author: str
    year: int


class Contact(BaseModel):
    name: str
    email: str


class Product(BaseModel):
    name: str
    price: float


class Flight(BaseModel):
    flight_number: str
    origin: str
    destination: str


class Company(BaseModel):
    name: str
    founded_year: int
    employees: int


class Appointment(BaseModel):
    patient: str
    doctor: str
    weekday: str


class Address(BaseModel):
    street: str
    city: str
    postcode: str


class Song(BaseModel):
    title: str
    artist: str
    length_seconds: int


class Car(BaseModel):
    make: str
    model: str
    year: int


class Package(BaseModel):
    tracking_code: str
    weight_kg: float


class Recipe(BaseModel):
    dish: str
    servings: int
    minutes: int


# ── classification ──────────────────────────────────────────────────────────


class Review(BaseModel):
    product: str
    sentiment: Sentiment


class Ticket(BaseModel):
    customer: str
    category: Literal["billing", "technical", "account", "shipping"]


class Incident(BaseModel):
    system: str
    priority: Priority


class Weather(BaseModel):
    city: str
    condition: Literal["sunny", "cloudy", "rainy", "snowy", "windy"]


class OrderStatus(StrEnum):
    PENDING = "pending"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"


class Order(BaseModel):
    order_id: str
    status: OrderStatus


class Greeting(BaseModel):
    language: Literal["english", "french", "german", "spanish", "italian"]


class Pet(BaseModel):
    name: str
    species: Literal["dog", "cat", "bird", "fish"]


class Email(BaseModel):
    sender: str
    kind: Literal["spam", "invoice", "newsletter", "personal"]


class Transaction(BaseModel):
    merchant: str
    category: Literal["groceries", "transport", "restaurant", "utilities"]


class Vehicle(BaseModel):
    kind: Literal["car", "bicycle", "train", "airplane", "boat"]


class Language(StrEnum):
    PYTHON = "python"
    JAVASCRIPT = "javascript"
    SQL = "sql"
    RUST = "rust"


class Snippet(BaseModel):
    language: Language


# ── arithmetic ──────────────────────────────────────────────────────────────


class Total(BaseModel):
    total: int


class Remaining(BaseModel):
    remaining: int


class Cost(BaseModel):
    item: str
    total_cost: float


class Share(BaseModel):
    per_person: float


class Distance(BaseModel):
    kilometres: int


class Age(BaseModel):
    name: str
    age: int


class Area(BaseModel):
    square_metres: int


class Change(BaseModel):
    change: float


class Score(BaseModel):
    team: str
    points: int = Field(ge=0)


class Minutes(BaseModel):
    minutes: int


LABELLED_TASKS: tuple[LabelledTask, ...] = (
    # extraction
    LabelledTask(
        "ex-person",
        "extraction",
        "Extract the person's name, age and city: 'Maria Lopez, 34, moved to Valencia last "
        "spring.'",
        Person,
        {"name": "Maria Lopez", "age": 34, "city": "Valencia"},
    ),
    LabelledTask(
        "ex-book",
        "extraction",
        "Extract the book's title, author and publication year: 'Nineteen Eighty-Four was "
        "written by George Orwell and published in 1949.'",
        Book,
        {"title": "Nineteen Eighty-Four", "author": "George Orwell", "year": 1949},
    ),
    LabelledTask(
        "ex-contact",
        "extraction",
        "Extract the contact's name and email address: 'You can reach Tom Becker at "
        "tom.becker@example.com during office hours.'",
        Contact,
        {"name": "Tom Becker", "email": "tom.becker@example.com"},
    ),
    LabelledTask(
        "ex-product",
        "extraction",
        "Extract the product name and its price in dollars: 'The Acme X200 blender costs "
        "$89.99 this week.'",
        Product,
        {"name": ("Acme X200 blender", "Acme X200"), "price": 89.99},
    ),
    LabelledTask(
        "ex-flight",
        "extraction",
        "Extract the flight number, origin city and destination city: 'Flight LH454 departs "
        "from Frankfurt and lands in Chicago.'",
        Flight,
        {"flight_number": "LH454", "origin": "Frankfurt", "destination": "Chicago"},
    ),
    LabelledTask(
        "ex-company",
        "extraction",
        "Extract the company's name, founding year and number of employees: 'Nordlicht "
        "Software was founded in 2009 and employs 420 people.'",
        Company,
        {"name": "Nordlicht Software", "founded_year": 2009, "employees": 420},
    ),
    LabelledTask(
        "ex-appointment",
        "extraction",
        "Extract the patient, the doctor and the weekday of the appointment: 'Peter Hall "
        "will see Dr. Amina Said on Thursday.'",
        Appointment,
        {
            "patient": "Peter Hall",
            "doctor": ("Amina Said", "Dr. Amina Said", "Dr Amina Said"),
            "weekday": "Thursday",
        },
    ),
    LabelledTask(
        "ex-address",
        "extraction",
        "Extract the street, city and postcode: 'Please send it to 12 Baker Street, London "
        "NW1 6XE.'",
        Address,
        {"street": "12 Baker Street", "city": "London", "postcode": "NW1 6XE"},
    ),
    LabelledTask(
        "ex-song",
        "extraction",
        "Extract the song title, the artist and the length in seconds: 'Bohemian Rhapsody "
        "by Queen runs for 354 seconds.'",
        Song,
        {"title": "Bohemian Rhapsody", "artist": "Queen", "length_seconds": 354},
    ),
    LabelledTask(
        "ex-car",
        "extraction",
        "Extract the car's make, model and year: 'For sale: a 2015 Toyota Corolla, one owner.'",
        Car,
        {"make": "Toyota", "model": "Corolla", "year": 2015},
    ),
    LabelledTask(
        "ex-package",
        "extraction",
        "Extract the tracking code and the weight in kilograms: 'Parcel ZX-4471 weighs 2.5 "
        "kg and leaves the depot today.'",
        Package,
        {"tracking_code": "ZX-4471", "weight_kg": 2.5},
    ),
    LabelledTask(
        "ex-recipe",
        "extraction",
        "Extract the dish, the number of servings and the cooking time in minutes: 'This "
        "lentil soup serves 4 and is ready in 35 minutes.'",
        Recipe,
        {"dish": ("lentil soup", "this lentil soup"), "servings": 4, "minutes": 35},
    ),
    # classification
    LabelledTask(
        "cl-review",
        "classification",
        "Name the product and classify the review's sentiment as positive, negative or "
        "neutral: 'The Zephyr headphones broke after two days. Very disappointed.'",
        Review,
        {"product": ("Zephyr headphones", "Zephyr"), "sentiment": "negative"},
    ),
    LabelledTask(
        "cl-review-good",
        "classification",
        "Name the product and classify the review's sentiment as positive, negative or "
        "neutral: 'I love my new Aurora lamp, it is bright and beautiful.'",
        Review,
        {"product": ("Aurora lamp", "Aurora"), "sentiment": "positive"},
    ),
    LabelledTask(
        "cl-ticket",
        "classification",
        "Give the customer's name and the ticket's category (billing, technical, account or "
        "shipping): 'Hi, this is Dana Fox. I was charged twice for my subscription this "
        "month.'",
        Ticket,
        {"customer": "Dana Fox", "category": "billing"},
    ),
    LabelledTask(
        "cl-incident",
        "classification",
        "Name the affected system and the incident's priority (low, medium, high or urgent): "
        "'URGENT: the payment gateway is down and no customer can pay.'",
        Incident,
        {"system": "payment gateway", "priority": "urgent"},
    ),
    LabelledTask(
        "cl-weather",
        "classification",
        "Give the city and the weather condition (sunny, cloudy, rainy, snowy or windy): "
        "'Heavy snow is falling in Oslo all afternoon.'",
        Weather,
        {"city": "Oslo", "condition": "snowy"},
    ),
    LabelledTask(
        "cl-order",
        "classification",
        "Extract the order ID and the order status (pending, shipped, delivered or "
        "cancelled): 'Your order A-7731 has been cancelled at your request.'",
        Order,
        {"order_id": "A-7731", "status": "cancelled"},
    ),
    LabelledTask(
        "cl-greeting",
        "classification",
        "Which language is this greeting in (english, french, german, spanish or italian)? "
        "'Guten Morgen, wie geht es dir?'",
        Greeting,
        {"language": "german"},
    ),
    LabelledTask(
        "cl-pet",
        "classification",
        "Give the pet's name and its species (dog, cat, bird or fish): 'Our parrot Kiwi "
        "repeats everything we say.'",
        Pet,
        {"name": "Kiwi", "species": "bird"},
    ),
    LabelledTask(
        "cl-email",
        "classification",
        "Give the sender and classify the email as spam, invoice, newsletter or personal: "
        "'From: Grandma Rose. Hello dear, I miss you, come for dinner on Sunday!'",
        Email,
        {"sender": "Grandma Rose", "kind": "personal"},
    ),
    LabelledTask(
        "cl-transaction",
        "classification",
        "Give the merchant and the spending category (groceries, transport, restaurant or "
        "utilities): 'Card payment of 3.20 at Metro Rail for a single ticket.'",
        Transaction,
        {"merchant": "Metro Rail", "category": "transport"},
    ),
    LabelledTask(
        "cl-vehicle",
        "classification",
        "Which kind of vehicle is described (car, bicycle, train, airplane or boat)? 'It "
        "has two pedals, two wheels and a bell.'",
        Vehicle,
        {"kind": "bicycle"},
    ),
    LabelledTask(
        "cl-snippet",
        "classification",
        "Which programming language is this code in (python, javascript, sql or rust)? "
        "'SELECT name FROM users WHERE age > 30;'",
        Snippet,
        {"language": "sql"},
    ),
    # arithmetic
    LabelledTask(
        "ar-eggs",
        "arithmetic",
        "A shop sells 3 boxes with 12 eggs in each box. How many eggs is that in total?",
        Total,
        {"total": 36},
    ),
    LabelledTask(
        "ar-sum",
        "arithmetic",
        "Add 17 and 25. Give the total.",
        Total,
        {"total": 42},
    ),
    LabelledTask(
        "ar-apples",
        "arithmetic",
        "Tim had 20 apples and gave 8 of them away. How many apples remain?",
        Remaining,
        {"remaining": 12},
    ),
    LabelledTask(
        "ar-tickets",
        "arithmetic",
        "Name the item and compute the total cost: 4 concert tickets at $25.50 each.",
        Cost,
        {"item": ("concert tickets", "concert ticket"), "total_cost": 102.0},
    ),
    LabelledTask(
        "ar-bill",
        "arithmetic",
        "A dinner bill of $90 is split equally between 3 friends. How much does each person pay?",
        Share,
        {"per_person": 30.0},
    ),
    LabelledTask(
        "ar-drive",
        "arithmetic",
        "A car drives at 60 km per hour for 3 hours. How many kilometres does it cover?",
        Distance,
        {"kilometres": 180},
    ),
    LabelledTask(
        "ar-age",
        "arithmetic",
        "Lena was born in 1990. How old is she in 2020? Give her name and age.",
        Age,
        {"name": "Lena", "age": 30},
    ),
    LabelledTask(
        "ar-room",
        "arithmetic",
        "A room is 5 metres long and 4 metres wide. What is its area in square metres?",
        Area,
        {"square_metres": 20},
    ),
    LabelledTask(
        "ar-change",
        "arithmetic",
        "I pay with a $10 note for a sandwich that costs $6.50. How much change do I get?",
        Change,
        {"change": 3.5},
    ),
    LabelledTask(
        "ar-score",
        "arithmetic",
        "The Rockets scored 30 points in the first half and 45 in the second. Give the team "
        "and its total points.",
        Score,
        {"team": "Rockets", "points": 75},
    ),
    LabelledTask(
        "ar-minutes",
        "arithmetic",
        "How many minutes are there in 2 hours and 15 minutes?",
        Minutes,
        {"minutes": 135},
    ),
    LabelledTask(
        "ar-pages",
        "arithmetic",
        "A book has 300 pages and Sam has read 120 of them. How many pages remain?",
        Remaining,
        {"remaining": 180},
    ),
)


def labelled_by_id() -> dict[str, LabelledTask]:
    """The labelled tasks keyed by `task_id` (ids are unique)."""
    table = {task.task_id: task for task in LABELLED_TASKS}
    assert len(table) == len(LABELLED_TASKS), "task ids must be unique"
    return table
