import { describe, expect, it } from "vitest";
import { inject } from "vitest";
import { openDatabase } from "../services/platform/database.js";
import { modules } from "../services/modules.js";

describe("committed migrations", () => {
  it.each(modules.filter((m) => m.database).map((m) => [m.name, m] as const))(
    "bring the %s schema exactly to its entities, and run once when applied concurrently",
    async (_name, module) => {
      const opened = await Promise.all([1, 2, 3].map(() => openDatabase(module.database!, { url: inject("databaseUrl"), poolSize: 2 })));
      try {
        const diff = await opened[0]!.schema.getUpdateSchemaSQL({ wrap: false, schema: module.database!.schema });
        // The ORM does not know the migrator's own bookkeeping table; everything else must match.
        const drift = diff.split("\n").filter((line) => line.trim() !== "" && !line.includes("mikro_orm_migrations"));
        expect(drift).toEqual([]);
        expect(await opened[0]!.migrator.getPending()).toEqual([]);
      } finally {
        await Promise.all(opened.map((orm) => orm.close()));
      }
    },
  );
});
