"""GenAI Factory Cost Optimization (catalog item 15): token and money budgets, spend ledger, prices.

- :mod:`genai_factory.cost.budgets`: ``BudgetPolicyEngine`` (the ``BudgetPolicy`` contract);
- :mod:`genai_factory.cost.backends` / :mod:`genai_factory.cost.redis_backend`: atomic counters;
- :mod:`genai_factory.cost.ledger`: ``SQLiteSpendLedger`` / ``PostgresSpendLedger`` (``SpendLedger``);
- :mod:`genai_factory.cost.prices`, :mod:`genai_factory.cost.estimator`, :mod:`genai_factory.cost.periods`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("genai-factory-cost-optimization")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

__all__ = ["__version__"]
