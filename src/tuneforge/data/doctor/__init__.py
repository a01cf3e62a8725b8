"""The data doctor, by concern; ``tuneforge.data.validate`` is its entry point (``validate_data``, ``load_checked``)."""
