"""fclens: what the final fully-connected layer of an image classifier has learned."""
