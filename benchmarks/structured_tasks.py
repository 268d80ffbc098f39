"""The fixed task set of the structured-output quality benchmark.

Thirty (prompt, Pydantic model) pairs in five classes of six, from flat records to nested
ones with enums, lists and numeric bounds. Each prompt is what a developer would write:
the instruction plus the text to extract from, naming the wanted fields in plain words.
Every approach gets exactly this prompt; what each adds (a schema in the system message,
a `response_format`, repair messages) is its own design.

Only pydantic and the standard library are imported, so the module loads both in the
project's venv and in the separate instructor venv (see `benchmarks/venvs.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field

TASK_CLASSES = ("flat", "enum", "list", "bounds", "nested")


@dataclass(frozen=True, slots=True)
class Task:
    """One benchmark case: ask `prompt`, expect an instance of `model`."""

    task_id: str
    task_class: str
    prompt: str
    model: type[BaseModel]


# ── flat: scalar fields only ────────────────────────────────────────────────


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
    phone: str


class Product(BaseModel):
    name: str
    price: float
    in_stock: bool


class Flight(BaseModel):
    airline: str
    flight_number: str
    origin: str
    destination: str


class Company(BaseModel):
    name: str
    founded_year: int
    headquarters: str
    employees: int


# ── enum: closed vocabularies (StrEnum and Literal) ─────────────────────────


class Sentiment(StrEnum):
    POSITIVE = "positive"
    NEGATIVE = "negative"
    NEUTRAL = "neutral"


class ReviewSentiment(BaseModel):
    product: str
    sentiment: Sentiment


class Priority(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    URGENT = "urgent"


class SupportTicket(BaseModel):
    summary: str
    priority: Priority
    category: Literal["billing", "technical", "account", "other"]


class WeatherReport(BaseModel):
    city: str
    condition: Literal["sunny", "cloudy", "rainy", "snowy", "windy"]


class OrderStatus(StrEnum):
    PENDING = "pending"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"


class OrderUpdate(BaseModel):
    order_id: str
    status: OrderStatus


class Language(StrEnum):
    ENGLISH = "english"
    FRENCH = "french"
    GERMAN = "german"
    SPANISH = "spanish"
    ITALIAN = "italian"


class DetectedLanguage(BaseModel):
    language: Language
    greeting: str


class Species(StrEnum):
    DOG = "dog"
    CAT = "cat"
    BIRD = "bird"
    FISH = "fish"


class Animal(BaseModel):
    name: str
    species: Species
    color: Literal["black", "white", "brown", "grey", "orange"]


# ── list: arrays of scalars, some with length bounds ────────────────────────


class ShoppingList(BaseModel):
    items: list[str] = Field(min_length=1)


class Recipe(BaseModel):
    title: str
    ingredients: list[str] = Field(min_length=1)


class Keywords(BaseModel):
    keywords: list[str] = Field(min_length=1, max_length=5)


class Meeting(BaseModel):
    topic: str
    day: str
    attendees: list[str] = Field(min_length=1)


class GameScores(BaseModel):
    team: str
    scores: list[int] = Field(min_length=1)


class Trip(BaseModel):
    traveller: str
    cities: list[str] = Field(min_length=2, max_length=4)


# ── bounds: integer and float bounds (ge/le, gt/lt) ─────────────────────────


class MovieRating(BaseModel):
    movie: str
    stars: int = Field(ge=1, le=5)


class TemperatureReading(BaseModel):
    city: str
    celsius: float = Field(ge=-90, le=60)


class ReviewScore(BaseModel):
    title: str
    score: float = Field(ge=0, le=10)


class Forecast(BaseModel):
    event: str
    probability: float = Field(ge=0, le=1)


class Discount(BaseModel):
    product: str
    percent: float = Field(gt=0, lt=100)
    price: float = Field(ge=0)


class ExamResult(BaseModel):
    student: str
    grade: int = Field(ge=0, le=100)
    gpa: float = Field(ge=0, le=4)


# ── nested: objects in objects, with enums, lists and bounds ────────────────


class PetColor(StrEnum):
    BLACK = "black"
    WHITE = "white"
    BROWN = "brown"
    GINGER = "ginger"


class Pet(BaseModel):
    name: str
    color: PetColor
    tags: list[str] = Field(max_length=3)


class PetOwner(BaseModel):
    owner: str
    pets: list[Pet] = Field(min_length=1, max_length=2)


class Customer(BaseModel):
    name: str
    email: str


class LineItem(BaseModel):
    name: str
    quantity: int = Field(ge=1)
    unit_price: float = Field(ge=0)


class Order(BaseModel):
    customer: Customer
    items: list[LineItem] = Field(min_length=1)
    status: OrderStatus


class Address(BaseModel):
    city: str
    country: str


class Role(StrEnum):
    SPEAKER = "speaker"
    ORGANIZER = "organizer"
    GUEST = "guest"


class Attendee(BaseModel):
    name: str
    role: Role


class Event(BaseModel):
    title: str
    location: Address
    attendees: list[Attendee] = Field(min_length=1)


class Position(StrEnum):
    GOALKEEPER = "goalkeeper"
    DEFENDER = "defender"
    MIDFIELDER = "midfielder"
    FORWARD = "forward"


class Player(BaseModel):
    name: str
    position: Position


class Team(BaseModel):
    name: str
    founded: int = Field(ge=1800, le=2030)
    players: list[Player] = Field(min_length=1, max_length=5)


class Currency(StrEnum):
    USD = "USD"
    EUR = "EUR"
    GBP = "GBP"


class InvoiceLine(BaseModel):
    description: str
    amount: float = Field(ge=0)


class Invoice(BaseModel):
    vendor: Address
    currency: Currency
    lines: list[InvoiceLine] = Field(min_length=1)


class Director(BaseModel):
    name: str
    nationality: str


class Genre(StrEnum):
    DRAMA = "drama"
    COMEDY = "comedy"
    THRILLER = "thriller"
    SCIENCE_FICTION = "science fiction"


class Film(BaseModel):
    title: str
    director: Director
    genre: Genre
    cast: list[str] = Field(max_length=3)
    rating: float = Field(ge=0, le=10)


TASKS: tuple[Task, ...] = (
    # flat
    Task(
        "flat-person",
        "flat",
        "Extract the person's name, age and city from this sentence: "
        "'Maria Lopez, 34, moved to Valencia last spring.'",
        Person,
    ),
    Task(
        "flat-book",
        "flat",
        "Extract the book's title, author and publication year: "
        "'Nineteen Eighty-Four was written by George Orwell and published in 1949.'",
        Book,
    ),
    Task(
        "flat-contact",
        "flat",
        "Extract the contact's name, email and phone number: "
        "'You can reach Tom Becker at tom.becker@example.com or on +49 30 1234567.'",
        Contact,
    ),
    Task(
        "flat-product",
        "flat",
        "Extract the product name, its price in dollars and whether it is in stock: "
        "'The Acme X200 blender costs $89.99 and is currently in stock.'",
        Product,
    ),
    Task(
        "flat-flight",
        "flat",
        "Extract the airline, flight number, origin city and destination city: "
        "'Lufthansa flight LH 454 departs from Frankfurt and lands in San Francisco.'",
        Flight,
    ),
    Task(
        "flat-company",
        "flat",
        "Extract the company's name, founding year, headquarters city and number of "
        "employees: 'Nordlicht Software was founded in 2009, is based in Hamburg and "
        "employs 420 people.'",
        Company,
    ),
    # enum
    Task(
        "enum-sentiment",
        "enum",
        "Name the product and classify the review's sentiment as positive, negative or "
        "neutral: 'The new Zephyr headphones broke after two days. Very disappointed.'",
        ReviewSentiment,
    ),
    Task(
        "enum-ticket",
        "enum",
        "Summarise this support ticket, give its priority (low, medium, high or urgent) and "
        "its category (billing, technical, account or other): 'I was charged twice for my "
        "subscription this month, please refund one payment as soon as possible.'",
        SupportTicket,
    ),
    Task(
        "enum-weather",
        "enum",
        "Give the city and the weather condition (sunny, cloudy, rainy, snowy or windy): "
        "'Heavy rain is expected in Manchester all afternoon.'",
        WeatherReport,
    ),
    Task(
        "enum-order",
        "enum",
        "Extract the order ID and the order status (pending, shipped, delivered or "
        "cancelled): 'Good news! Your order #A-7731 has been shipped and is on its way.'",
        OrderUpdate,
    ),
    Task(
        "enum-language",
        "enum",
        "Which language is this greeting in (english, french, german, spanish or "
        "italian)? Also repeat the greeting: 'Bonjour tout le monde !'",
        DetectedLanguage,
    ),
    Task(
        "enum-animal",
        "enum",
        "Extract the animal's name, its species (dog, cat, bird or fish) and its color "
        "(black, white, brown, grey or orange): 'Our orange cat Biscuit sleeps all day.'",
        Animal,
    ),
    # list
    Task(
        "list-shopping",
        "list",
        "List the items to buy: 'We need milk, eggs, bread and two lemons for the weekend.'",
        ShoppingList,
    ),
    Task(
        "list-recipe",
        "list",
        "Give the recipe's title and its ingredients: 'For a simple pancake batter, whisk "
        "flour, milk, eggs and a pinch of salt.'",
        Recipe,
    ),
    Task(
        "list-keywords",
        "list",
        "Give up to five keywords for this headline: 'Solar power overtakes coal in "
        "European electricity production for the first time.'",
        Keywords,
    ),
    Task(
        "list-meeting",
        "list",
        "Extract the meeting topic, the day and the attendees: 'On Tuesday, Anna, Ben and "
        "Chloe will meet to plan the product launch.'",
        Meeting,
    ),
    Task(
        "list-scores",
        "list",
        "Extract the team and its scores: 'The Rockets scored 98, 105 and 87 points in their "
        "last three games.'",
        GameScores,
    ),
    Task(
        "list-trip",
        "list",
        "Extract the traveller and the cities visited, in order: 'Last summer Priya "
        "travelled from Lisbon to Madrid and then on to Barcelona.'",
        Trip,
    ),
    # bounds
    Task(
        "bounds-stars",
        "bounds",
        "Rate the movie from 1 to 5 stars based on this review: 'Jaws is a masterpiece, "
        "tense from the first minute to the last.'",
        MovieRating,
    ),
    Task(
        "bounds-temperature",
        "bounds",
        "Extract the city and the temperature in degrees Celsius: 'It was a chilly -3.5 "
        "degrees in Oslo this morning.'",
        TemperatureReading,
    ),
    Task(
        "bounds-review-score",
        "bounds",
        "Give the title and a score from 0 to 10 for this game review: 'Starfall Odyssey is "
        "fun but short; I would give it a solid seven and a half.'",
        ReviewScore,
    ),
    Task(
        "bounds-probability",
        "bounds",
        "Name the event and give its probability as a number between 0 and 1: 'There is a "
        "70 percent chance of thunderstorms tomorrow.'",
        Forecast,
    ),
    Task(
        "bounds-discount",
        "bounds",
        "Extract the product, the discount percentage and the final price: 'The Trailblazer "
        "backpack is 25% off this week, now only $59.'",
        Discount,
    ),
    Task(
        "bounds-exam",
        "bounds",
        "Extract the student, the exam grade out of 100 and the GPA on a 4-point scale: "
        "'Liam scored 88 on the final exam, bringing his GPA to 3.6.'",
        ExamResult,
    ),
    # nested
    Task(
        "nested-pets",
        "nested",
        "Describe the owner and their pets, each with a name, a color (black, white, brown "
        "or ginger) and up to three tags: 'Sofia has a ginger cat called Milo, who is lazy "
        "and friendly, and a black dog called Rex.'",
        PetOwner,
    ),
    Task(
        "nested-order",
        "nested",
        "Extract the customer (name and email), the items with quantity and unit price, and "
        "the order status (pending, shipped, delivered or cancelled): 'Order for Jane Kim "
        "(jane.kim@example.com): 2 notebooks at $3.50 each and 1 pen at $1.20. Status: "
        "delivered.'",
        Order,
    ),
    Task(
        "nested-event",
        "nested",
        "Extract the event title, its location (city and country) and the attendees with "
        "their roles (speaker, organizer or guest): 'PyCon Lisbon in Lisbon, Portugal, is "
        "organised by Rui, with Dana as the keynote speaker.'",
        Event,
    ),
    Task(
        "nested-team",
        "nested",
        "Extract the team, its founding year and its players with their positions "
        "(goalkeeper, defender, midfielder or forward): 'FC Riverside, founded in 1921, "
        "fields Marco in goal, Ivan in defence and Leo up front.'",
        Team,
    ),
    Task(
        "nested-invoice",
        "nested",
        "Extract the vendor's city and country, the currency (USD, EUR or GBP) and the "
        "invoice lines with their amounts: 'Invoice from Berlin, Germany: web design 1200 "
        "EUR, hosting 300 EUR.'",
        Invoice,
    ),
    Task(
        "nested-film",
        "nested",
        "Extract the film's title, its director (name and nationality), its genre (drama, "
        "comedy, thriller or science fiction), up to three cast members and a rating from 0 "
        "to 10: 'Arrival, directed by the Canadian Denis Villeneuve and starring Amy Adams "
        "and Jeremy Renner, is a science fiction film I rate 8.5.'",
        Film,
    ),
)


def tasks_by_id() -> dict[str, Task]:
    """The tasks keyed by `task_id` (ids are unique)."""
    table = {task.task_id: task for task in TASKS}
    assert len(table) == len(TASKS), "task ids must be unique"
    return table
