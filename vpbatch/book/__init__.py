"""Order book, event engine and the numpy layouts they share."""
