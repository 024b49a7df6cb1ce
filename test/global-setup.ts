import type { TestProject } from "vitest/node";
import { createDatabase, dropDatabase } from "./databases.js";

declare module "vitest" {
  export interface ProvidedContext {
    databaseUrl: string;
  }
}

/**
 * Every test run gets its own database on the real PostgreSQL server, created
 * here and dropped at the end, so parallel runs never see each other's rows.
 */
export default async function setup(project: TestProject) {
  const name = `boxoffice_test_${process.pid}_${Date.now().toString(36)}`;
  project.provide("databaseUrl", await createDatabase(name));
  return () => dropDatabase(name);
}
